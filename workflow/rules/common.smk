# Config validation, run expansion and path helpers shared by every rule module.
import json
import os
import re
import sys
from pathlib import Path

# The rules call the installed `clgrid` CLI; the Snakefile itself only needs the
# package's pure-Python config helpers, so it also works from a plain checkout.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from clgrid import config as cl  # noqa: E402
from clgrid import resources as cl_resources  # noqa: E402

SCHEMA = str(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
try:  # schema (filling its defaults) and cross-field checks: clgrid.config.check
    cl.check(config, SCHEMA, files=workflow.overwrite_configfiles or ["config/config.yaml"],
             overrides=dict(workflow.config_settings.config))
except cl.ConfigError as err:
    # The message alone: Snakemake would add this file's name and line, which say nothing about the config.
    print(err, file=sys.stderr)
    sys.exit(1)

# Every path the DAG makes, spelled out in full so a reader can grep for it.
DATASET = "results/data/{dataset}.npz"
DATASET_META = "results/data/{dataset}.json"
RAW_DONE = os.path.join(config["data_root"], "{dataset}", ".clgrid_downloaded")
SCENARIO = "results/scenarios/{benchmark}.json"
INIT_MODEL = "results/init/{benchmark}/{backbone}/s{seed}/model.pt"
INIT_EVAL = "results/init/{benchmark}/{backbone}/s{seed}/eval.json"
WEIGHTS_DONE = "results/weights/{backbone}.json"
FEATURES = "results/features/{benchmark}/{backbone}/s{seed}/features.pt"
TASK_STATE = "results/runs/{benchmark}/{backbone}/{method}/s{seed}/task{task}/state.pt"
TASK_EVAL = "results/runs/{benchmark}/{backbone}/{method}/s{seed}/task{task}/eval.json"
RUN_METRICS = "results/runs/{benchmark}/{backbone}/{method}/s{seed}/metrics.json"
RUN_ANALYSIS = "results/runs/{benchmark}/{backbone}/{method}/s{seed}/analysis.json"
RUN_COMPARISON = "results/compare/{benchmark}/{backbone}/{method}__vs__{other}/s{seed}/cka.json"
FIGURE = "results/figures/{benchmark}/{backbone}/{figure}.{ext}"
TABLE = "results/tables/{table}"
ENV = "../../envs/clgrid.yaml"
FIGURES = ("acc_matrix", "acc_curve", "forgetting", "summary")
ANALYSIS_FIGURES = ("cka_curves", "cka_layers", "rankme", "probe_vs_head")
TABLES = ("runs.csv", "acc_matrix.csv", "summary.csv", "summary.md", "summary.tex")


wildcard_constraints:
    benchmark=r"[A-Za-z0-9_]+",
    backbone=r"[A-Za-z0-9_]+",
    method=r"[A-Za-z0-9_~=.,+-]+",
    other=r"[A-Za-z0-9_~=.,+-]+",
    dataset=r"[A-Za-z0-9_]+",
    seed=r"\d+",
    task=r"\d+",


def as_json(spec):
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def dataset_files(wildcards):
    return expand(DATASET, dataset=cl.datasets_of(config, wildcards.benchmark))


def run_dataset_files(wildcards):
    """A training job's datasets: the benchmark's and any its method draws from (ZSCL's reference images)."""
    return expand(DATASET, dataset=cl.run_datasets(config, wildcards.benchmark, wildcards.method))


def dataset_spec(wildcards):
    return as_json(cl.dataset_spec(config, wildcards.dataset))


def raw_dataset(wildcards):
    """What prepare_dataset reads: an imported .npz, the download rule's marker, or nothing (digits, a folder)."""
    options = config["datasets"].get(wildcards.dataset, {})
    if "npz" in options:
        return {"npz": options["npz"]}
    if "path" in options or wildcards.dataset == "digits":
        return {}
    return {"raw": RAW_DONE.format(dataset=wildcards.dataset)}


def raw_dir_arg(wildcards, input):
    return f"--raw-dir {os.path.dirname(input.raw)}" if "raw" in input.keys() else ""


def scenario_spec(wildcards):
    return as_json(cl.scenario_spec(config, wildcards.benchmark))


def init_spec(wildcards):
    return as_json(cl.init_spec(config, wildcards.benchmark, wildcards.backbone, int(wildcards.seed)))


def run_spec(wildcards):
    return as_json(
        cl.run_spec(config, wildcards.benchmark, wildcards.backbone, wildcards.method, int(wildcards.seed))
    )


def analysis_spec(wildcards):
    return as_json(
        cl.analysis_spec(config, wildcards.benchmark, wildcards.backbone, wildcards.method, int(wildcards.seed))
    )


def analyses_of(wildcards):
    """Every run's analysis.json of one benchmark x backbone."""
    return [
        RUN_ANALYSIS.format(**vars(run))
        for run in cl.runs(config)
        if run.benchmark == wildcards.benchmark and run.backbone == wildcards.backbone
    ]


def other_spec(wildcards):
    return as_json(
        cl.analysis_spec(config, wildcards.benchmark, wildcards.backbone, wildcards.other, int(wildcards.seed))
    )


def other_states(wildcards):
    return run_states(wildcards, wildcards.other)


def comparisons():
    """Cross-run CKA files: every configured pair (analysis.cross_run_pairs) for every benchmark, backbone, seed."""
    return [
        RUN_COMPARISON.format(benchmark=b, backbone=bb, method=a, other=o, seed=s)
        for b in config["benchmarks"]
        for bb in config["backbones"]
        for a, o in cl.cross_run_pairs(config)
        for s in config["seeds"]
    ]


def figure_pdfs(wildcards=None):
    return expand(
        FIGURE,
        benchmark=list(config["benchmarks"]),
        backbone=list(config["backbones"]),
        figure=FIGURES + ANALYSIS_FIGURES,
        ext=("pdf",),
    )


def previous_state(wildcards):
    """Task 0 starts from the seed's shared initial weights, task t from task t-1's state."""
    wildcards = dict(wildcards)
    task = int(wildcards["task"])
    if task == 0:
        return INIT_MODEL.format(**wildcards)
    return TASK_STATE.format(**{**wildcards, "task": task - 1})


def chunk_previous_state(first):
    """The state a job training tasks ``first``.. starts from."""
    return lambda wildcards: previous_state({**wildcards, "task": first})


def one_of(names):
    """A wildcard constraint matching exactly these names (none: a pattern that never matches)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def pretrained_weights(wildcards):
    """The download_weights marker for a backbone with weights to fetch ({} for random or local-file weights)."""
    if not cl.needs_download(config["backbones"][wildcards.backbone]):
        return {}
    return {"weights": WEIGHTS_DONE.format(backbone=wildcards.backbone)}


def cached_features(wildcards):
    """The frozen backbone's feature cache a run trains on ({} for runs that train their backbone)."""
    if not cl.uses_feature_cache(config, wildcards.benchmark, wildcards.backbone, wildcards.method):
        return {}
    seed = cl.feature_seed(config, wildcards.backbone, int(wildcards.seed))
    return {"features": FEATURES.format(benchmark=wildcards.benchmark, backbone=wildcards.backbone, seed=seed)}


def features_arg(wildcards, input):
    return f"--features {input.features}" if "features" in input.keys() else ""


def task_evals(wildcards):
    return [TASK_EVAL.format(**{**wildcards, "task": t}) for t in range(cl.n_tasks(config, wildcards.benchmark))]


def run_states(wildcards, method):
    """state.pt of every task of ``method``'s run at the wildcards' benchmark, backbone and seed."""
    return [
        TASK_STATE.format(**{**wildcards, "method": method, "task": t})
        for t in range(cl.n_tasks(config, wildcards.benchmark))
    ]


def task_states(wildcards):
    return run_states(wildcards, wildcards.method)


def all_metrics(wildcards=None):
    return [RUN_METRICS.format(**vars(run)) for run in cl.runs(config)]


def final_outputs():
    figures = expand(
        FIGURE,
        benchmark=list(config["benchmarks"]),
        backbone=list(config["backbones"]),
        figure=FIGURES + ANALYSIS_FIGURES,
        ext=("png", "pdf"),
    )
    published = ["results/tables/published.md"] if config.get("published") else []
    if config.get("sweeps"):
        published += expand(FIGURE, benchmark=list(config["benchmarks"]), backbone=list(config["backbones"]),
                            figure=("sweep",), ext=("png",))
    return (
        expand(TABLE, table=TABLES)
        + figures
        + published
        + comparisons()
        + ["results/paper/tables.tex", "results/paper/tables.md"]
    )


# What a job asks the scheduler for, from the config (clgrid.resources). `gpu` is 1 when the config's device is a
# GPU, or auto on a cluster (any non-local executor) or a machine with a visible GPU; override per rule with
# --set-resources or the cluster profile's set-resources (profiles/README.md).
def train_resource(key, tasks=1):
    return lambda wildcards: cl_resources.train_task(
        config, wildcards.benchmark, wildcards.backbone, wildcards.method, workflow.non_local_exec, tasks
    )[key]


def analysis_resource(key):
    return lambda wildcards: cl_resources.analysis(
        config, wildcards.benchmark, wildcards.backbone, workflow.non_local_exec
    )[key]


def init_resource(key):
    return lambda wildcards: cl_resources.init_or_eval(
        config, wildcards.benchmark, wildcards.backbone, workflow.non_local_exec
    )[key]
