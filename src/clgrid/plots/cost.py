"""The cost tables and the accuracy-against-compute figure: what ``clgrid.cost`` collected, per run and per method.

``cost.csv`` holds one row per run and job part (``clgrid.cost.cost_rows``); ``cost.md`` the mean over seeds of
each run's total per benchmark × backbone × method, beside the final ACC of ``summary.csv``, final runs and a
selection's candidates in separate tables. ``acc_vs_compute`` plots each run's final ACC against its training
FLOPs and its wall seconds (log scales), a colour per method as in every other figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from clgrid import paths
from clgrid.cost import COLUMNS, SUMMED
from clgrid.io import atomic_path

RUN_KEYS = ["stage", "benchmark", "backbone", "method", "seed"]
STAGES = {"final": "Final runs", "selection": "Selection (candidates on validation data)"}
COST_FIGURE = paths.COST_FIGURE


MEASURED = list(SUMMED) + ["max_rss_mb"]


def run_totals(rows: pd.DataFrame) -> pd.DataFrame:
    """Each run's total over its rows (tasks, init, metrics): seconds, samples, FLOPs and bytes add up, the peak
    memory is the largest. Over the jobs that were measured: ``<column>_partial`` is True where some job of the run
    was not (the total is then a lower bound); NaN where none was."""
    grouped = rows.groupby(RUN_KEYS, sort=False, observed=True)
    totals = grouped[list(SUMMED)].sum(min_count=1)
    totals["max_rss_mb"] = grouped["max_rss_mb"].max()
    for column in MEASURED:
        totals[f"{column}_partial"] = grouped[column].apply(lambda v: bool(v.isna().any() and v.notna().any()))
    return totals.reset_index()


def method_means(totals: pd.DataFrame) -> pd.DataFrame:
    """The mean over seeds of the run totals, per stage × benchmark × backbone × method, with the seed count; a
    mean is partial (a lower bound) where a seed's total is partial or unmeasured and another's is not."""
    keys = RUN_KEYS[:-1]
    grouped = totals.groupby(keys, sort=False, observed=True)
    means = grouped[MEASURED].mean()
    for column in MEASURED:
        means[f"{column}_partial"] = grouped[[column, f"{column}_partial"]].apply(
            lambda part, c=column: bool(part[f"{c}_partial"].any() or (part[c].isna().any() and part[c].notna().any())))
    means["seeds"] = grouped.size()
    return means.reset_index()


def si(value: float, unit: str = "") -> str:
    """``value`` with an SI prefix and three significant digits: 3.52e10 -> "35.2 G"; NaN -> "–"."""
    if value is None or pd.isna(value):
        return "–"
    if value == 0:
        return f"0 {unit}".strip()
    exponent = min(max(int(math.floor(math.log10(abs(value)) / 3)), 0), 5)
    return f"{value / 1000 ** exponent:.3g} {' kMGTP'[exponent].strip()}{unit}".strip()


def _cells(part: pd.DataFrame, column: str, unit: str = "", scale: float = 1.0) -> list[str]:
    """``si`` of each mean, marked "≥" where it is over the measured jobs only."""
    return [("≥ " if partial and not pd.isna(v) else "") + si(v * scale, unit)
            for v, partial in zip(part[column], part[f"{column}_partial"])]


def cost_markdown(means: pd.DataFrame, summary: pd.DataFrame | None) -> str:
    """A Markdown table per stage and benchmark: ACC (final runs: mean ± the half-width of its 95% interval from
    summary.csv, or ± sd where summary.csv has no interval) beside the costs."""
    acc = {}
    if summary is not None and "acc_mean" in summary:
        spread = "acc_ci95" if "acc_ci95" in summary else "acc_std"
        for row in summary.itertuples(index=False):
            half = getattr(row, spread, math.nan)
            acc[(row.benchmark, row.backbone, row.method)] = f"{row.acc_mean:.1f}" + \
                ("" if pd.isna(half) else f" ± {half:.1f}")
    parts = []
    for stage, title in STAGES.items():
        here = means[means["stage"] == stage]
        for benchmark in dict.fromkeys(here["benchmark"]):
            part = here[here["benchmark"] == benchmark]
            table = pd.DataFrame({
                "Backbone": part["backbone"], "Method": part["method"],
                "ACC": [acc.get((benchmark, b, m), "–") if stage == "final" else "–"
                        for b, m in zip(part["backbone"], part["method"])],
                "Wall": _cells(part, "wall_s", "s"), "CPU": _cells(part, "cpu_s", "s"),
                "GPU": _cells(part, "gpu_s", "s"), "Peak memory": _cells(part, "max_rss_mb", "B", 1e6),
                "Samples": _cells(part, "samples"), "Train FLOPs": _cells(part, "flops_train"),
                "Eval FLOPs": _cells(part, "flops_eval"), "Checkpoints": _cells(part, "checkpoint_bytes", "B"),
                "Seeds": part["seeds"]})
            parts.append(f"### {title}: {benchmark}\n\n{table.to_markdown(index=False)}\n")
    note = ("ACC: mean ± half-width of its 95% interval over seeds (summary.csv). "
            "Mean over seeds of each run's total: its training jobs (a job of several tasks split evenly over them), "
            "the initial model and its evaluation (shared by the methods of a seed, counted in each run) and its "
            "metrics job. FLOPs counted with torch's FlopCounterMode on one step, times the samples trained on "
            "(evaluation: one forward per evaluated sample); a method's own extra compute (replay's extra batch, "
            "distillation's teacher) is not counted; the samples trained on are those the method's training data "
            "held (its log), a task adopted from a per-task selection trained none. CPU and memory of a job the warm "
            "worker ran: the usage line at the end of its log. '≥': some jobs were not measured (shorter than "
            "Snakemake's first sample, in their own process), the value is over those that were; '–': none was.")
    return "\n".join(parts) + "\n" + note + "\n"


def write_cost_tables(rows: list[dict[str, Any]], summary_csv: str | None, out_dir: str) -> list[Path]:
    """cost.csv (every row) and cost.md (``cost_markdown``) in ``out_dir``."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    out = Path(out_dir)
    paths = [out / "cost.csv", out / "cost.md"]
    with atomic_path(paths[0]) as tmp:
        frame.to_csv(tmp, index=False)
    summary = pd.read_csv(summary_csv) if summary_csv else None
    means = method_means(run_totals(frame)) if len(frame) else pd.DataFrame(columns=RUN_KEYS + ["seeds"])
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(cost_markdown(means, summary))
    return paths


def plot_acc_vs_compute(points: pd.DataFrame, palette: dict, title: str):
    """Two panels, final ACC against training FLOPs and against wall seconds (log x): a small point per seed,
    a large one at the mean over seeds of both coordinates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from clgrid.plots.analysis_figures import method_legend

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True, layout="constrained")
    for ax, (column, label) in zip(axes, (("flops_train", "training FLOPs (forward + backward)"),
                                          ("wall_s", "wall seconds (all jobs of the run)"))):
        for method, colour in palette.items():
            runs = points[points["method"] == method]
            ax.scatter(runs[column], runs["acc"], color=colour, s=14, alpha=0.5, linewidths=0)
            ax.scatter(runs[column].mean(), runs["acc"].mean(), color=colour, s=70, edgecolors="black",
                       linewidths=0.6, label=method, zorder=3)
        ax.set_xscale("log")
        # Labelled ticks with SI prefixes: at 1, 1.5, 2, 3, 5, 7 × 10^k where the values lie within about a decade
        # (so it still gets some), at 1 and 3 × 10^k over two decades, at 10^k beyond (no labels run together).
        values = points[column][points[column] > 0]
        decades = math.log10(values.max() / values.min()) if len(values) else 0.0
        subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades <= 1.2 else (1.0, 3.0) if decades <= 2.5 else (1.0,)
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: si(value)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(label)
    axes[0].set_ylabel("final ACC (%)")
    method_legend(fig, axes[1], len(palette), title="method")
    fig.suptitle(f"{title}: final ACC against compute (large: mean over seeds; small: each seed)")
    return fig


def write_cost_figure(cost_csv: str, runs_csv: str, benchmark: str, backbone: str, out_dir: str) -> list[Path]:
    """acc_vs_compute.png and .pdf of one benchmark × backbone: the final runs of cost.csv, ACC from runs.csv."""
    from clgrid.plots.figures import _save, _style, method_palette

    _style()
    runs = pd.read_csv(runs_csv)
    palette = method_palette(list(dict.fromkeys(runs["method"])))
    cost = pd.read_csv(cost_csv, dtype={"task": str})
    totals = run_totals(cost[cost["stage"] == "final"])
    keys = ["benchmark", "backbone", "method", "seed"]
    points = totals.merge(runs[keys + ["acc"]], on=keys)
    points = points[(points["benchmark"] == benchmark) & (points["backbone"] == backbone)]
    if points.empty:
        raise ValueError(f"no final runs of benchmark '{benchmark}' with backbone '{backbone}' in both '{cost_csv}' "
                         f"and '{runs_csv}'")
    palette = {m: c for m, c in palette.items() if m in set(points["method"])}
    return _save(plot_acc_vs_compute(points, palette, f"{benchmark} / {backbone}"), Path(out_dir), COST_FIGURE)
