# Config validation, run expansion and path helpers shared by every rule module.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

# The rules call the installed `clgrid` CLI; the Snakefile itself only needs the
# package's pure-Python config helpers, so it also works from a plain checkout.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from clgrid import config as cl  # noqa: E402

validate(config, "../schemas/config.schema.yaml")
cl.check_config(config)

RESULTS = "results"
SCENARIO = RESULTS + "/scenarios/{benchmark}.json"
DATASET = RESULTS + "/data/{dataset}.npz"
INIT = RESULTS + "/init/{benchmark}/{backbone}/s{seed}"
RUN = RESULTS + "/runs/{benchmark}/{backbone}/{method}/s{seed}"
TASK = RUN + "/task{task}"
LOGS = RESULTS + "/logs"
BENCH = RESULTS + "/benchmarks"
ENV = "../../envs/clgrid.yaml"
FIGURES = ("acc_matrix", "acc_curve", "forgetting")
TABLES = ("runs.csv", "acc_matrix.csv", "summary.csv", "summary.md", "summary.tex")


wildcard_constraints:
    benchmark=r"[A-Za-z0-9_]+",
    backbone=r"[A-Za-z0-9_]+",
    method=r"[A-Za-z0-9_~=.,+-]+",
    dataset=r"[A-Za-z0-9_]+",
    seed=r"\d+",
    task=r"\d+",


def as_json(spec):
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def dataset_files(wildcards):
    return expand(DATASET, dataset=cl.datasets_of(config, wildcards.benchmark))


def scenario_spec(wildcards):
    return as_json(cl.scenario_spec(config, wildcards.benchmark))


def init_spec(wildcards):
    return as_json(cl.init_spec(config, wildcards.benchmark, wildcards.backbone, int(wildcards.seed)))


def run_spec(wildcards):
    return as_json(
        cl.run_spec(config, wildcards.benchmark, wildcards.backbone, wildcards.method, int(wildcards.seed))
    )


def previous_state(wildcards):
    """Task 0 starts from the seed's shared initial weights, task t from task t-1's state."""
    task = int(wildcards.task)
    if task == 0:
        return INIT.format(**{k: wildcards[k] for k in ("benchmark", "backbone", "seed")}) + "/model.pt"
    return TASK.format(task=task - 1, **{k: wildcards[k] for k in ("benchmark", "backbone", "method", "seed")}) + "/state.pt"


def task_evals(wildcards):
    n = cl.n_tasks(config, wildcards.benchmark)
    return [
        TASK.format(task=t, **{k: wildcards[k] for k in ("benchmark", "backbone", "method", "seed")}) + "/eval.json"
        for t in range(n)
    ]


def all_metrics(wildcards=None):
    return [RUN.format(**vars(run)) + "/metrics.json" for run in cl.runs(config)]


def final_outputs():
    figures = expand(
        RESULTS + "/figures/{benchmark}/{backbone}/{figure}.{ext}",
        benchmark=list(config["benchmarks"]),
        backbone=list(config["backbones"]),
        figure=FIGURES,
        ext=("png", "pdf"),
    )
    return expand(RESULTS + "/tables/{table}", table=TABLES) + figures
