"""The results path grammar, written once: every file the DAG makes, as a template, and the rule that makes it.

The rules (``workflow/rules/common.smk``), the error hints of ``clgrid.io`` (which rule rebuilds a broken file),
the config checks (is a dataset prepared already) and the in-process runner (``clgrid.plan``) all read these
templates, so a layout change is made here and nowhere else. Pure Python: the Snakefile imports it.
"""

from __future__ import annotations

import os
import re

DATASET = "results/data/{dataset}.npz"
DATASET_META = "results/data/{dataset}.json"
SCENARIO = "results/scenarios/{benchmark}.json"
INIT_MODEL = "results/init/{benchmark}/{backbone}/s{seed}/model.pt"
INIT_EVAL = "results/init/{benchmark}/{backbone}/s{seed}/eval.json"
INIT_EVAL_VALIDATION = "results/init/{benchmark}/{backbone}/s{seed}/eval_validation.json"
WEIGHTS_DONE = "results/weights/{backbone}.json"
FEATURES = "results/features/{benchmark}/{backbone}/s{seed}/features.pt"
TASK_STATE = "results/runs/{benchmark}/{backbone}/{method}/s{seed}/task{task}/state.pt"
TASK_EVAL = "results/runs/{benchmark}/{backbone}/{method}/s{seed}/task{task}/eval.json"
RUN_METRICS = "results/runs/{benchmark}/{backbone}/{method}/s{seed}/metrics.json"
RUN_ANALYSIS = "results/runs/{benchmark}/{backbone}/{method}/s{seed}/analysis.json"
SELECTION = "results/selection/{benchmark}/{backbone}/{base}/selection.json"
"""Whole-stream and first-k: the chosen values and every candidate's score (mean over the selection seeds)."""
TASK_SELECTION = "results/selection/{benchmark}/{backbone}/{base}/s{seed}/task{task}/{stage}.json"
"""Per task: the chosen learning rate (stage ``plasticity``) and stability weight (stage ``stability``)."""
RUN_COMPARISON = "results/compare/{benchmark}/{backbone}/{method}__vs__{other}/s{seed}/cka.json"
FIGURE = "results/figures/{benchmark}/{backbone}/{figure}.{ext}"
TABLE = "results/tables/{table}"
PUBLISHED = "results/tables/published.{ext}"
PAPER = "results/paper/{name}"
TRACKERS = "results/trackers"  # the local tracker stores (clgrid.trackers): tensorboard/, mlruns/, wandb/
TRACKER_RECEIPT = "results/trackers/runs/{benchmark}/{backbone}/{method}/s{seed}/export.json"
RESUME_SUFFIX = ".resume.pt"
"""An in-job checkpoint lives beside the task state it will become: ``<state.pt>.resume.pt``."""

FIGURES = ("acc_matrix", "acc_curve", "forgetting", "summary")
ANALYSIS_FIGURES = ("cka_curves", "cka_layers", "rankme", "probe_vs_head")
SWEEP_FIGURE = "sweep"
SELECTION_FIGURE = "selection"
TABLES = ("runs.csv", "acc_matrix.csv", "summary.csv", "summary.md", "summary.tex")
TABLES += ("per_seed.csv", "per_seed.md", "comparisons.csv", "comparisons.md")  # every seed's number, every test
COST_TABLES = ("cost.csv", "cost.md")  # what each run cost (clgrid.cost), made by the cost_tables rule
COST_FIGURE = "acc_vs_compute"  # final ACC against training FLOPs and wall seconds, made by cost_figure
PROGRESS_TABLE = "progress.md"  # the grid's state when it ran (clgrid.progress), made by the progress rule
TIDY_TABLES = ("all_runs.csv", "all_runs.parquet")  # every run's config and metrics, made by tidy_table


def raw_done(data_root: str) -> str:
    """The marker the download rule writes once a dataset's raw files are under ``data_root``."""
    return os.path.join(data_root, "{dataset}", ".clgrid_downloaded")


def resume_file(state: str) -> str:
    return state + RESUME_SUFFIX


def _pattern(template: str, **fixed: str) -> str:
    """A regex matching the paths of ``template``: a wildcard matches within one folder level, unless ``fixed``
    gives its own regex."""
    parts = re.split(r"(\{\w+\})", template)
    out = []
    for part in parts:
        name = part[1:-1] if part.startswith("{") and part.endswith("}") else None
        out.append(fixed.get(name, r"[^/]+") if name else re.escape(part))
    return "".join(out) + "$"


def _one_of(names) -> str:
    return "(" + "|".join(re.escape(n) for n in names) + ")"


RULE_OF_PATH: tuple[tuple[str, str], ...] = (
    (_pattern(DATASET), "prepare_dataset"),
    (_pattern(DATASET_META), "prepare_dataset"),
    (_pattern(SCENARIO), "prepare_scenario"),
    (_pattern(WEIGHTS_DONE), "download_weights"),
    (_pattern(INIT_MODEL), "init_model"),
    (_pattern(INIT_EVAL), "evaluate_init"),
    (_pattern(INIT_EVAL_VALIDATION), "evaluate_init_validation"),
    (_pattern(SELECTION), "select_hyperparameters"),
    (_pattern(TASK_SELECTION, task=r"\d+", stage="plasticity"), "select_plasticity"),
    (_pattern(TASK_SELECTION, task=r"\d+", stage="stability"), "select_stability"),
    (_pattern(FEATURES), "extract_features"),
    (_pattern(TASK_STATE, task=r"\d+"), "train_task"),
    (_pattern(resume_file(TASK_STATE), task=r"\d+"), "train_task"),
    (_pattern(TASK_EVAL, task=r"\d+"), "train_task"),
    (_pattern(RUN_METRICS), "run_metrics"),
    (_pattern(RUN_ANALYSIS), "analyze_run"),
    (_pattern(RUN_COMPARISON), "compare_runs"),
    (_pattern(TRACKER_RECEIPT), "export_run_trackers"),
    (_pattern(PUBLISHED, ext="[a-z]+"), "published"),
    (_pattern(TABLE.format(table="selection.md")), "selection_report"),
    (_pattern(TABLE.format(table="selection.csv")), "selection_report"),
    (_pattern(TABLE, table=_one_of(COST_TABLES)), "cost_tables"),
    (_pattern(FIGURE, figure=re.escape(COST_FIGURE), ext="[a-z]+"), "cost_figure"),
    (_pattern(TABLE.format(table=PROGRESS_TABLE)), "progress"),
    (_pattern(TABLE, table=_one_of(TIDY_TABLES)), "tidy_table"),
    (_pattern(TABLE), "tables"),
    (_pattern(PAPER), "paper"),
    (_pattern(FIGURE, figure=re.escape(SWEEP_FIGURE), ext="[a-z]+"), "sweep_figure"),
    (_pattern(FIGURE, figure=re.escape(SELECTION_FIGURE), ext="[a-z]+"), "selection_report"),
    (_pattern(FIGURE, figure=_one_of(ANALYSIS_FIGURES), ext="[a-z]+"), "analysis_figures"),
    (_pattern(FIGURE, ext="[a-z]+"), "figures"),
)
"""Which Snakemake rule makes a path, first match wins (a path matches from a ``results/`` folder anywhere)."""


def producer_rule(path: str | os.PathLike) -> str | None:
    """The Snakemake rule whose job writes ``path`` (a file under some ``results/``), or None if none does."""
    from pathlib import Path

    text = Path(path).as_posix()
    for pattern, rule in RULE_OF_PATH:
        if re.search(r"(^|/)" + pattern, text):
            return rule
    return None
