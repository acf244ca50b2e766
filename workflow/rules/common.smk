# Config validation, run expansion and path helpers shared by every rule module.
import json
import os
import re
import shlex
import sys
from pathlib import Path

# The rules call the installed `clgrid` CLI; the Snakefile itself only needs the
# package's pure-Python config helpers, so it also works from a plain checkout.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from clgrid import config as cl  # noqa: E402
from clgrid import paths  # noqa: E402
from clgrid import plan as cl_plan  # noqa: E402
from clgrid.cost import cost_specs  # noqa: E402
from clgrid import resources as cl_resources  # noqa: E402
from clgrid.catalog import metrics as cl_metric_catalog  # noqa: E402
from clgrid.config import selection as cl_selection  # noqa: E402
from clgrid import storage as cl_storage  # noqa: E402

SCHEMA = str(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
try:  # schema (filling its defaults) and cross-field checks: clgrid.config.check
    cl.check(config, SCHEMA, files=workflow.overwrite_configfiles or ["config/config.yaml"],
             overrides=dict(workflow.config_settings.config))
except cl.ConfigError as err:
    # The message alone: Snakemake would add this file's name and line, which say nothing about the config.
    print(err, file=sys.stderr)
    sys.exit(1)

# storage.checkpoints (clgrid.storage): how the train jobs save task states. A layout setting, not a result: the
# jobs read it from their environment (the warm worker passes it on), so switching it changes no params and reruns
# nothing.
cl_storage.set_checkpoint_policy(config["storage"]["checkpoints"])
# The optional budget: block against the estimated cost (clgrid.preview), before any job runs (checked by the
# process that schedules, not again in each job's).
if config.get("budget") and workflow.is_main_process:
    from clgrid import preview as cl_preview  # noqa: E402

    try:
        _estimate = cl_preview.estimate(config, on_cluster=workflow.non_local_exec)
        for _warning in cl_preview.check_budget(config, _estimate):
            print(f"clgrid budget warning: {_warning}", file=sys.stderr)
    except cl.ConfigError as err:
        print(err, file=sys.stderr)
        sys.exit(1)

# Every path the DAG makes: the templates of clgrid.paths, the one place the results layout is written.
DATASET = paths.DATASET
DATASET_META = paths.DATASET_META
RAW_DONE = paths.raw_done(config["data_root"])
SCENARIO = paths.SCENARIO
INIT_MODEL = paths.INIT_MODEL
INIT_EVAL = paths.INIT_EVAL
INIT_EVAL_VALIDATION = paths.INIT_EVAL_VALIDATION
SELECTION = paths.SELECTION
TASK_SELECTION = paths.TASK_SELECTION
WEIGHTS_DONE = paths.WEIGHTS_DONE
FEATURES = paths.FEATURES
TASK_STATE = paths.TASK_STATE
TASK_EVAL = paths.TASK_EVAL
RUN_METRICS = paths.RUN_METRICS
RUN_ANALYSIS = paths.RUN_ANALYSIS
RUN_COMPARISON = paths.RUN_COMPARISON
FIGURE = paths.FIGURE
TABLE = paths.TABLE
ENV = "../../envs/clgrid.yaml"
FIGURES = paths.FIGURES
ANALYSIS_FIGURES = paths.ANALYSIS_FIGURES
TABLES = paths.TABLES


def table(name):
    """A results table (paths.TABLE), e.g. table("runs.csv")."""
    return paths.TABLE.format(table=name)


def paper_file(name):
    """A file of the paper rule (paths.PAPER), e.g. paper_file("tables.tex")."""
    return paths.PAPER.format(name=name)


def published_file(ext):
    """The table beside the published numbers (paths.PUBLISHED)."""
    return paths.PUBLISHED.format(ext=ext)


wildcard_constraints:
    benchmark=r"[A-Za-z0-9_]+",
    backbone=r"[A-Za-z0-9_]+",
    method=r"[A-Za-z0-9_~=.,+-]+",
    other=r"[A-Za-z0-9_~=.,+-]+",
    dataset=r"[A-Za-z0-9_]+",
    seed=r"\d+",
    task=r"\d+",
    base=r"[A-Za-z0-9_]+",
    stage=r"plasticity|stability",


def as_json(spec):
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def configfile_args(wildcards=None):
    """The config files this Snakemake read, absolute and quoted (a job may run in --directory), for the commands
    that load the config themselves (clgrid progress, clgrid preview); their --config values: config_overrides."""
    files = workflow.overwrite_configfiles or [Path(workflow.basedir) / "config" / "config.yaml"]
    return " ".join(shlex.quote(os.path.abspath(str(f))) for f in files)


def config_overrides(wildcards=None):
    return as_json(dict(workflow.config_settings.config))


# The input functions read a run's plan (clgrid.plan), which the in-process runner follows too.
def dataset_files(wildcards):
    return cl_plan.dataset_files(config, wildcards.benchmark)


def run_dataset_files(wildcards):
    """A training job's datasets: the benchmark's and any its method draws from (ZSCL's reference images)."""
    return cl_plan.run_dataset_files(config, wildcards.benchmark, wildcards.method)


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
        for b, bb in cl.cells(config)
        for a, o in cl.cross_run_pairs(config)
        if cl.in_grid(config, b, bb, a) and cl.in_grid(config, b, bb, o)
        for s in config["seeds"]
    ]


def per_cell(template, **wildcards):
    """``template`` filled for every (benchmark, backbone) with runs (clgrid.config.cells), as expand() orders it."""
    return [path for b, bb in cl.cells(config) for path in expand(template, benchmark=b, backbone=bb, **wildcards)]


def figure_pdfs(wildcards=None):
    return per_cell(FIGURE, figure=FIGURES + ANALYSIS_FIGURES, ext=("pdf",))


def previous_state(wildcards):
    """Task 0 starts from the seed's shared initial weights, task t from task t-1's state."""
    w = dict(wildcards)
    return cl_plan.previous_state(w["benchmark"], w["backbone"], w.get("method"), w["seed"], int(w["task"]))


def chunk_previous_state(first):
    """The state a job training tasks ``first``.. starts from."""
    return lambda wildcards: previous_state({**wildcards, "task": first})


def one_of(names):
    """A wildcard constraint matching exactly these names (none: a pattern that never matches)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def pretrained_weights(wildcards):
    """The download_weights marker for a backbone with weights to fetch ({} for random or local-file weights)."""
    marker = cl_plan.weights_marker(config, wildcards.backbone)
    return {"weights": marker} if marker else {}


BACKBONES_FROM_RUNS = [name for name, backbone in config["backbones"].items() if backbone.get("init_from")]


def init_source_state(wildcards):
    """The task state an init_from backbone's initial model starts from (clgrid.plan.source_state)."""
    return cl_plan.source_state(config, wildcards.benchmark, wildcards.backbone, wildcards.seed)


def selection_inputs(wildcards):
    """A final run's selection file (the select_hyperparameters checkpoint's output: its jobs are planned once the
    choice is made, and a new choice reruns them); {} for every other run, so their jobs keep their inputs."""
    record = cl_selection.selection_of(config, wildcards.method)
    if not record or record["role"] != "final" or record["protocol"] == "per_task":
        return {}
    done = checkpoints.select_hyperparameters.get(benchmark=wildcards.benchmark, backbone=wildcards.backbone,
                                                  base=record["base"])
    return {"selection": done.output[0]}


def cached_features(wildcards):
    """The frozen backbone's feature cache a run trains on ({} for runs that train their backbone)."""
    cache = cl_plan.feature_cache(config, wildcards.benchmark, wildcards.backbone, wildcards.method, wildcards.seed)
    return {"features": cache} if cache else {}


def features_arg(wildcards, input):
    return f"--features {input.features}" if "features" in input.keys() else ""


def task_evals(wildcards):
    return cl_plan.task_files(TASK_EVAL, config, wildcards.benchmark, wildcards.backbone, wildcards.method,
                              wildcards.seed)


def run_states(wildcards, method):
    """state.pt of every task of ``method``'s run at the wildcards' benchmark, backbone and seed."""
    return cl_plan.task_files(TASK_STATE, config, wildcards.benchmark, wildcards.backbone, method, wildcards.seed)


def task_states(wildcards):
    return run_states(wildcards, wildcards.method)


def all_metrics(wildcards=None):
    return [RUN_METRICS.format(**vars(run)) for run in cl.runs(config)]


def final_outputs():
    figures = per_cell(FIGURE, figure=FIGURES + ANALYSIS_FIGURES, ext=("png", "pdf"))
    published = [published_file("md")] if config.get("published") else []
    if cl.sweep_points(config):
        published += per_cell(FIGURE, figure=(paths.SWEEP_FIGURE,), ext=("png",))
    if cl_selection.finals(config):
        published += [table("selection.md")] + per_cell(FIGURE, figure=(paths.SELECTION_FIGURE,), ext=("png",))
    return (
        expand(TABLE, table=TABLES)
        + figures
        + published
        + comparisons()
        + [paper_file("tables.tex"), paper_file("tables.md")]
        + [table(name) for name in paths.COST_TABLES]
        + per_cell(FIGURE, figure=(paths.COST_FIGURE,), ext=("png", "pdf"))
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


# Selection studies (clgrid.config.selection; the rules are in select.smk).
SELECTIONS = cl_selection.finals(config)
CANDIDATE_RUNS = sorted({run.method for run in cl_selection.candidate_runs(config)})
_ROLE = {name: cl_selection.selection_of(config, name) for name in CANDIDATE_RUNS + list(SELECTIONS)}
VALIDATION_CANDIDATES = [n for n, r in _ROLE.items() if r["role"] == "candidate" and r["protocol"] != "per_task"]
PER_TASK_CANDIDATES = [n for n, r in _ROLE.items() if r["role"] == "candidate" and r["protocol"] == "per_task"]
PER_TASK_FINALS = [n for n, r in SELECTIONS.items() if r["protocol"] == "per_task"]
FIRST_K = sorted({int(r["k"]) for r in SELECTIONS.values() if r["protocol"] == "first_k"})


def selection_spec(wildcards):
    """What the select job needs: the candidates (in the sweep's order) with their values, metric, direction."""
    record = SELECTIONS[cl_selection.final_name(wildcards.base)]
    return as_json({
        "base": wildcards.base, "protocol": record["protocol"], "metric": record["metric"],
        "higher_is_better": cl_metric_catalog.higher_is_better(record["metric"]),
        "candidates": [[name, _ROLE[name]["values"]] for name in record["candidates"]],  # the sweep's order
        "seeds": cl_selection.candidate_seeds(config, cl_selection.final_name(wildcards.base)),
        **({"k": record["k"]} if "k" in record else {}),
    })


def selection_metrics(wildcards):
    """Every candidate's validation metrics of one selection, candidates in the sweep's order, then seeds."""
    final = cl_selection.final_name(wildcards.base)
    return [RUN_METRICS.format(benchmark=wildcards.benchmark, backbone=wildcards.backbone, method=name, seed=seed)
            for name in SELECTIONS[final]["candidates"] for seed in cl_selection.candidate_seeds(config, final)]


def selection_report_inputs(wildcards=None):
    """What the selection report reads: the selections' files, the final runs' and test rows' test metrics."""
    finals = [RUN_METRICS.format(**vars(run)) for run in cl.runs(config) if run.method in SELECTIONS]
    rows = [RUN_METRICS.format(**vars(run)) for run in cl_selection.candidate_runs(config)
            if _ROLE[run.method]["role"] == "test_row"]
    stability = [TASK_SELECTION.format(benchmark=run.benchmark, backbone=run.backbone, base=SELECTIONS[run.method]["base"],
                                       seed=run.seed, task=t, stage="stability")
                 for run in cl.runs(config) if run.method in PER_TASK_FINALS
                 for t in range(cl.n_tasks(config, run.benchmark))]
    return {"selections": cl_selection.selection_files(config), "stability": stability, "finals": finals,
            "test_rows": rows}


def _per_task_record(wildcards):
    return SELECTIONS[cl_selection.final_name(wildcards.base)]


def _per_task_where(wildcards, task=None):
    return dict(benchmark=wildcards.benchmark, backbone=wildcards.backbone, seed=wildcards.seed,
                task=wildcards.task if task is None else task)


def chosen_state(wildcards, base, task):
    """The state the stability selection of ``task`` chose (read from the checkpoint's output once it ran)."""
    done = checkpoints.select_stability.get(benchmark=wildcards.benchmark, backbone=wildcards.backbone, base=base,
                                            seed=wildcards.seed, task=task)
    with open(done.output[0]) as handle:
        return json.load(handle)["state"]


def per_task_prev(wildcards):
    """A per-task candidate's task t starts from the state task t-1 chose (task 0: the initial model). A named input
    of its own: while the checkpoint is pending, Snakemake puts the checkpoint's output in its place."""
    task = int(wildcards.task)
    if task == 0:
        return INIT_MODEL.format(benchmark=wildcards.benchmark, backbone=wildcards.backbone, seed=wildcards.seed)
    return chosen_state(wildcards, _ROLE[wildcards.method]["base"], task - 1)


def per_task_lr(wildcards):
    """A stability candidate's task: the learning rate its plasticity selection chose (none for an lr candidate)."""
    record = _ROLE[wildcards.method]
    if record["stage"] != "stability":
        return {}
    return {"lr": TASK_SELECTION.format(base=record["base"], stage="plasticity", **_per_task_where(wildcards))}


def task_selection_spec(stage):
    def spec(wildcards):
        record = _per_task_record(wildcards)
        names = record[f"{stage}_candidates"]
        where = _per_task_where(wildcards)
        headline = "task_il" if config["benchmarks"][wildcards.benchmark]["scenario"] == "task_incremental" else "class_il"
        out = {"base": wildcards.base, "seed": int(wildcards.seed), "task": int(wildcards.task), "stage": stage,
               "candidates": names, "states": [TASK_STATE.format(method=n, **where) for n in names],
               "headline": headline}
        if stage == "plasticity":
            out["lrs"] = record["lrs"]
        else:
            out.update(weights=record["weights"], fraction=record["fraction"], stability_key=record["stability_key"])
        return as_json(out)

    return spec


def task_candidate_evals(stage):
    return lambda wildcards: [TASK_EVAL.format(method=n, **_per_task_where(wildcards))
                              for n in _per_task_record(wildcards)[f"{stage}_candidates"]]


def adopted_state(wildcards):
    """A per-task final run's task t: the state its stability selection chose."""
    return chosen_state(wildcards, SELECTIONS[wildcards.method]["base"], wildcards.task)


def adopted_choice(wildcards):
    return TASK_SELECTION.format(base=SELECTIONS[wildcards.method]["base"], stage="stability",
                                 **_per_task_where(wildcards))


def selection_candidate_runs():
    """The selections' candidate runs (their compute is the selection's cost; test rows are not a protocol's)."""
    return [run for run in cl_selection.candidate_runs(config) if _ROLE[run.method]["role"] == "candidate"]


def selection_cost_inputs(wildcards=None):
    """What the cost table reads of the candidates: every task's evaluation (per-task candidates have no metrics)."""
    return [path for run in selection_candidate_runs()
            for path in cl_plan.task_files(TASK_EVAL, config, run.benchmark, run.backbone, run.method, run.seed)]


# Tracker export (rules export_run_trackers, export_trackers in report.smk; docs/trackers.md).
def export_options(wildcards=None):
    return config.get("export") or {}


def export_figures(wildcards):
    """The PNG figures of the run's benchmark x backbone, unless export.figures is false."""
    if not export_options().get("figures", True):
        return []
    return expand(FIGURE, benchmark=wildcards.benchmark, backbone=wildcards.backbone, figure=FIGURES, ext="png")


def tracker_receipts(wildcards=None):
    if not any(export_options().get(tracker) for tracker in ("tensorboard", "mlflow", "wandb")):
        raise cl.ConfigError("export_trackers was asked for but no tracker is on", path=["export"],
                             value=config.get("export"), allowed="tensorboard, mlflow, wandb: true",
                             fix="add `export: {tensorboard: true}` (or mlflow, wandb) to the config "
                             "(or to a small file passed as a second --configfile)")
    return [paths.TRACKER_RECEIPT.format(**vars(run)) for run in cl.runs(config)]


def trackers_root(wildcards, output):
    """results/trackers, read off the receipt's path (paths.TRACKER_RECEIPT: <root>/runs/<b>/<bb>/<m>/s<seed>/...)."""
    return str(Path(output[0]).parents[5])
