"""Metric names and their table order, and the frames of every run and of their mean ± std over seeds."""

from __future__ import annotations

import pandas as pd

from clgrid.catalog import metrics as metric_catalog
from clgrid.io import read_json

KEYS = ["benchmark", "backbone", "method"]
STATISTICS = ("mean", "std", "ci95", "n")
"""The statistics of a summary column (summary.csv: ``<metric>_<statistic>``)."""

# Column order, labels and directions of every metric: clgrid.catalog.metrics (acc_<setname> keys follow, sorted).
METRIC_ORDER = list(metric_catalog.METRICS)
METRIC_LABELS = {name: metric.label for name, metric in metric_catalog.METRICS.items()}
TASK_IL = metric_catalog.TASK_IL
# Metrics that exist in a class-IL and a task-IL flavour: labelled "(class-IL)"/"(task-IL)" when both are shown.
SCENARIO_METRICS = tuple(name for name in metric_catalog.METRICS if metric_catalog.has_task_il(name))


def is_metric(key: str) -> bool:
    """True for a metric this module tabulates: one of ``METRIC_ORDER`` or ``acc_<setname>``."""
    return key in METRIC_ORDER or metric_catalog.is_extra_set(key)


def ordered_metrics(keys) -> list[str]:
    """The metrics among ``keys`` in table order: ``METRIC_ORDER``, then ``acc_<setname>`` sorted."""
    keys = set(keys)
    fixed = [k for k in METRIC_ORDER if k in keys]
    return fixed + sorted(k for k in keys if k not in METRIC_ORDER and is_metric(k))


def higher_is_better(key: str) -> bool:
    return metric_catalog.higher_is_better(key)


def metric_label(key: str, task_il_shown: bool = False) -> str:
    """Column label of a metric; class-IL and task-IL are told apart when ``task_il_shown``."""
    if key.endswith(TASK_IL) and key[: -len(TASK_IL)] in SCENARIO_METRICS:
        return f"{METRIC_LABELS[key[: -len(TASK_IL)]]} (task-IL)"
    if key in SCENARIO_METRICS and task_il_shown:
        return f"{METRIC_LABELS[key]} (class-IL)"
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    if key.startswith("acc_"):
        return f"ACC on {key[len('acc_'):]}"
    return key


def selected_text(selection: dict) -> str:
    """What a selection chose for a final run, as the tables show it: ``ewc_lambda=10`` or, per task, one entry per
    task (``lr=0.05,ewc_lambda=250; ...``)."""
    from clgrid.config.sweeps import sweep_value

    if selection.get("per_task"):
        return "; ".join(",".join(f"{k}={sweep_value(v)}" for k, v in row.items()
                                   if k in ("lr", selection.get("stability_key"))) for row in selection["per_task"])
    return ",".join(f"{k}={sweep_value(v)}" for k, v in (selection.get("values") or {}).items())


def selected_note(runs: pd.DataFrame) -> str:
    """The values each selected run was trained with (chosen on validation data), for the tables' notes."""
    if "selected" not in runs:
        return ""
    chosen = runs.dropna(subset=["selected"]).drop_duplicates(["benchmark", "backbone", "method", "selected"])
    lines = [f"- {r.benchmark} / {r.backbone} / {r.method}: {r.selected}" + (f" (seed {r.seed})" if ";" in r.selected
                                                                                 else "")
             for r in chosen.itertuples()]
    return ("\nRuns named ~selected were trained with values chosen on validation data "
            "(results/tables/selection.md); per task, one entry per task:\n\n" + "\n".join(lines) + "\n")


def collect(metrics_files: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per run (scalar metrics) and one row per accuracy-matrix cell, in input order."""
    run_rows, cell_rows = [], []
    for path in metrics_files:
        m = read_json(path)
        ident = {k: m[k] for k in (*KEYS, "seed")}
        prov = m["provenance"]
        run_rows.append({**ident, **m["metrics"], "n_tasks": len(m["acc_matrix"]),
                         "diverged_task": m["diverged_at"]["task"] if m.get("diverged") else None,
                         "config_hash": prov["config_hash"], "git_commit": prov["git_commit"], "device": prov["device"],
                         **({"selected": selected_text(m["selection"])} if "selection" in m else {})})
        for t, row in enumerate(m["acc_matrix"]):
            for i, acc in enumerate(row):
                cell_rows.append({**ident, "after_task": t, "task": i, "acc": acc})
    return pd.DataFrame(run_rows), pd.DataFrame(cell_rows)


def ci95(values: pd.Series) -> float:
    """Half-width of the 95% Student-t interval of the mean of the finite ``values`` (NaN below two)."""
    from clgrid.stats import mean_ci

    return mean_ci(values.dropna().tolist()).half_width


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1), the 95% interval's half-width (``ci95``: Student t, ``clgrid.stats.mean_ci``) and
    seed count of each metric per benchmark × backbone × method, and how many of those seeds diverged
    (``diverged_task`` set; their metrics are NaN, so the mean is of the others).

    Every metric present in any run gets columns; runs that lack it (another benchmark) count as NaN.
    """
    order = {k: list(dict.fromkeys(runs[k])) for k in KEYS}
    metrics = ordered_metrics(runs.columns)
    values = runs[KEYS].join(runs[metrics].apply(pd.to_numeric, errors="coerce").astype(float))
    out = values.groupby(KEYS, sort=False)[metrics].agg(["mean", "std", ci95])
    out[("seeds", "n")] = runs.groupby(KEYS, sort=False)["seed"].count()
    if "diverged_task" in runs:
        out[("diverged", "n")] = runs.groupby(KEYS, sort=False)["diverged_task"].count()
    out = out.reset_index()
    for k in KEYS:
        out[k] = pd.Categorical(out[k], categories=order[k], ordered=True)
    return out.sort_values(KEYS).reset_index(drop=True)


def summary_metrics(summary: pd.DataFrame) -> list[str]:
    """The metrics a summary has columns for, in table order."""
    return ordered_metrics(c[0] for c in summary.columns if c[1] == "mean")


def flatten(summary: pd.DataFrame) -> pd.DataFrame:
    """Summary columns as in summary.csv: ``acc_mean``, ``acc_task_il_std``, ``acc_ci95``, ``seeds_n``."""
    flat = summary.copy()
    flat.columns = [a if not b else f"{a}_{b}" for a, b in flat.columns]
    return flat


def unflatten(flat: pd.DataFrame) -> pd.DataFrame:
    """Inverse of ``flatten``: the (metric, statistic) columns and ordered categorical keys back.

    Only the last underscore separates a statistic (mean, std, ci95, n), so ``acc_task_il_mean`` is
    (``acc_task_il``, ``mean``).
    """
    columns = []
    for c in flat.columns:
        head, _, tail = c.rpartition("_")
        columns.append((head, tail) if c not in KEYS and head and tail in STATISTICS else (c, ""))
    summary = flat.copy()
    summary.columns = pd.MultiIndex.from_tuples(columns)
    for k in KEYS:
        summary[k] = pd.Categorical(flat[k].astype(str), categories=list(dict.fromkeys(flat[k].astype(str))),
                                    ordered=True)
    return summary


def read_summary(summary_csv: str) -> pd.DataFrame:
    """summary.csv from ``write_tables``, as the summary ``summarise`` returned."""
    return unflatten(pd.read_csv(summary_csv))
