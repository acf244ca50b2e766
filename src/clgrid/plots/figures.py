"""Per-benchmark figures: accuracy matrices, accuracy on seen tasks after each task, forgetting.

Every figure uses one seaborn style and one colour per method across the whole
grid, so a method looks the same in every panel. Accuracy colour scales are
fixed to 0–100 so heatmaps of different methods compare.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from clgrid.io import atomic_path  # noqa: E402
from clgrid.plots.analysis_figures import method_legend  # noqa: E402

FORMATS = ("png", "pdf")
MAX_COLUMNS = 6  # heatmaps per row; a grid of many methods wraps instead of growing one long row



@contextlib.contextmanager
def _seeded_jitter(seed: int = 0):
    """seaborn's strip-plot jitter draws from NumPy's global generator: seed it for this plot only, so the same
    results always give the same figure bytes, and restore the caller's state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)

def method_palette(methods: list[str]) -> dict[str, tuple]:
    """A fixed, distinct colour per method, in the grid's method order (tab10, tab20 beyond 10, husl beyond 20)."""
    n = max(len(methods), 1)
    colours = sns.color_palette("tab10" if n <= 10 else "tab20" if n <= 20 else "husl", n_colors=n)
    return dict(zip(methods, colours))


def _style() -> None:
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    plt.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.dpi": 150, "savefig.bbox": "tight"})


def _save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt)
        paths.append(path)
    plt.close(fig)
    return paths


def acc_seen_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """A_t per run and task t: mean accuracy on tasks 0..t after training task t."""
    seen = cells[cells["task"] <= cells["after_task"]]
    keys = ["benchmark", "backbone", "method", "seed", "after_task"]
    return seen.groupby(keys, sort=False)["acc"].mean().reset_index(name="acc_seen")


def _mean_matrix(cells: pd.DataFrame, n_tasks: int) -> pd.DataFrame:
    """R[t, i] averaged over seeds, every task kept: a run recorded as diverged has NaN rows, drawn as blank cells."""
    mean = cells.pivot_table(index="after_task", columns="task", values="acc", aggfunc="mean", dropna=False)
    return mean.reindex(index=range(n_tasks), columns=range(n_tasks))


def plot_acc_matrices(cells: pd.DataFrame, methods: list[str], title: str) -> plt.Figure:
    n_tasks = int(cells["task"].max()) + 1
    n = len(methods)
    cols = min(n, MAX_COLUMNS)
    rows = -(-n // cols)
    size = 0.45 * n_tasks + 1.2
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 1.0, (size + 0.6) * rows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for i, (ax, method) in enumerate(zip(axes.flat, methods)):
        mean = _mean_matrix(cells[cells["method"] == method], n_tasks)
        sns.heatmap(mean, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=n_tasks <= 10, fmt=".0f",
                    annot_kws={"size": 7}, cbar=i % cols == cols - 1 or i == n - 1, square=True,
                    cbar_kws={"label": "accuracy (%)", "shrink": 0.8})
        ax.set_title(method)
        ax.set_xlabel("evaluated task")
        ax.set_ylabel("after training task" if i % cols == 0 else "")
        ax.set_xticklabels(range(1, n_tasks + 1))
        ax.set_yticklabels(range(1, n_tasks + 1), rotation=0)
    fig.suptitle(f"{title}: accuracy matrix R[t, i] (mean over seeds)")
    return fig


def plot_acc_curve(seen: pd.DataFrame, palette: dict, title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    frame = seen.assign(task=seen["after_task"] + 1)
    sns.lineplot(data=frame, x="task", y="acc_seen", hue="method", palette=palette, hue_order=list(palette),
                 errorbar="sd", marker="o", ax=ax)
    ax.set_xticks(range(1, int(frame["task"].max()) + 1))
    ax.set_ylim(0, 100)
    ax.set_xlabel("after training task")
    ax.set_ylabel("accuracy on tasks seen (%)")
    ax.set_title(f"{title}: accuracy on seen tasks (band: ± sd over seeds)")
    method_legend(fig, ax, len(palette), title="method")
    return fig


def plot_forgetting(runs: pd.DataFrame, palette: dict, title: str) -> plt.Figure:
    order = list(palette)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(order) + 1.5), 3.4), constrained_layout=True)
    sns.barplot(data=runs, x="method", y="forgetting", hue="method", order=order, hue_order=order,
                palette=palette, errorbar="sd", capsize=0.2, legend=False, ax=ax)
    with _seeded_jitter():
        sns.stripplot(data=runs, x="method", y="forgetting", order=order, color="black", size=3, ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("average forgetting (%)")
    ax.set_title(f"{title}: forgetting (Chaudhry et al. 2018)")
    ax.axhline(0, color="black", linewidth=0.8)
    if len(order) > 6:
        plt.setp(ax.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor")
    return fig


def plot_summary(cells: pd.DataFrame, runs: pd.DataFrame, palette: dict, title: str) -> plt.Figure:
    """One page per benchmark: accuracy matrices (top), accuracy on seen tasks and forgetting (bottom)."""
    methods = list(palette)
    n_tasks = int(cells["task"].max()) + 1
    cols = min(len(methods), MAX_COLUMNS)
    rows = -(-len(methods) // cols)
    fig = plt.figure(figsize=(max(2.3 * cols, 8.0), 3.2 * rows + 4.0), constrained_layout=True)
    # at least two columns: the bottom row splits into the seen-task curve and the forgetting bars (one method too)
    grid = fig.add_gridspec(rows + 1, max(cols, 2), height_ratios=[1] * rows + [1.25])
    for i, method in enumerate(methods):
        col = i % cols
        ax = fig.add_subplot(grid[i // cols, col])
        mean = _mean_matrix(cells[cells["method"] == method], n_tasks)
        sns.heatmap(mean, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=n_tasks <= 6, fmt=".0f",
                    annot_kws={"size": 6}, cbar=False, square=True)
        ax.set_title(method, color=palette[method])
        ax.set_xlabel("task")
        ax.set_ylabel("after task" if col == 0 else "")
        ax.set_xticklabels(range(1, n_tasks + 1))
        ax.set_yticklabels(range(1, n_tasks + 1), rotation=0)
    half = max(cols, 2) // 2
    ax_curve = fig.add_subplot(grid[rows, :half])
    seen = acc_seen_frame(cells)
    sns.lineplot(data=seen.assign(task=seen["after_task"] + 1), x="task", y="acc_seen", hue="method",
                 hue_order=methods, palette=palette, errorbar="sd", marker="o", ax=ax_curve)
    ax_curve.set_ylim(0, 100)
    ax_curve.set_xticks(range(1, n_tasks + 1))
    ax_curve.set_xlabel("after training task")
    ax_curve.set_ylabel("accuracy on seen tasks (%)")
    if len(methods) <= 8:
        ax_curve.legend(title="method", fontsize=8, frameon=False)
    else:  # many methods: a legend under the axes instead of over the curves
        ax_curve.legend(title="method", fontsize=7, frameon=False, ncol=3, loc="upper center",
                        bbox_to_anchor=(0.5, -0.18))
    ax_bar = fig.add_subplot(grid[rows, half:])
    sns.barplot(data=runs, x="method", y="forgetting", hue="method", order=methods, hue_order=methods,
                palette=palette, errorbar="sd", capsize=0.2, legend=False, ax=ax_bar)
    ax_bar.set_xlabel("")
    ax_bar.set_ylabel("average forgetting (%)")
    plt.setp(ax_bar.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor")
    fig.suptitle(f"{title}: accuracy matrices (0–100 %), accuracy on seen tasks, forgetting (mean ± sd over seeds)")
    return fig


def write_figures(runs_csv: str, cells_csv: str, benchmark: str, backbone: str, out_dir: str) -> list[Path]:
    """Write the three figures of one benchmark × backbone as PNG and PDF."""
    _style()
    runs = pd.read_csv(runs_csv)
    cells = pd.read_csv(cells_csv)
    methods = list(dict.fromkeys(runs["method"]))
    palette = method_palette(methods)
    runs = runs[(runs["benchmark"] == benchmark) & (runs["backbone"] == backbone)]
    cells = cells[(cells["benchmark"] == benchmark) & (cells["backbone"] == backbone)]
    if runs.empty:
        raise ValueError(f"no runs of benchmark '{benchmark}' with backbone '{backbone}' in '{runs_csv}'")
    here = [m for m in methods if m in set(runs["method"])]
    palette = {m: palette[m] for m in here}
    title = f"{benchmark} / {backbone}"
    out = Path(out_dir)
    paths = _save(plot_acc_matrices(cells, here, title), out, "acc_matrix")
    paths += _save(plot_acc_curve(acc_seen_frame(cells), palette, title), out, "acc_curve")
    paths += _save(plot_forgetting(runs, palette, title), out, "forgetting")
    paths += _save(plot_summary(cells, runs, palette, title), out, "summary")
    return paths


def write_analysis_figures(analysis_files: list[str], methods: list[str], out_dir: str) -> list[Path]:
    """CKA curves, layer × layer CKA maps, RankMe and probe-vs-head figures of one benchmark × backbone."""
    from clgrid.io import read_json
    from clgrid.plots import analysis_figures as af

    _style()
    records = [read_json(p) for p in analysis_files]
    if not records:
        raise ValueError("no analysis files given")
    bench, backbone = records[0]["benchmark"], records[0]["backbone"]
    palette = {m: c for m, c in method_palette(methods).items() if m in {r["method"] for r in records}}
    layers = records[0]["layers"]
    cka_rows, task_rows = [], []
    for r in records:
        for layer, values in r["cka_to_first"].items():
            cka_rows += [{"method": r["method"], "seed": r["seed"], "layer": layer, "after_task": t, "cka": v}
                         for t, v in enumerate(values)]
        task_rows += [{"method": r["method"], "seed": r["seed"], "after_task": t, "rankme": rk, "probe_acc": pr,
                       "head_acc": hd} for t, (rk, pr, hd) in enumerate(zip(r["rankme"], r["probe_acc"], r["head_acc"]))]
    per_task = pd.DataFrame(task_rows)
    maps = {m: np.mean([r["cka_layers_first_last"] for r in records if r["method"] == m], axis=0) for m in palette}
    title = f"{bench} / {backbone}"
    out = Path(out_dir)
    paths = _save(af.plot_cka_curves(pd.DataFrame(cka_rows), palette, title), out, "cka_curves")
    paths += _save(af.plot_cka_layer_maps(maps, layers, title), out, "cka_layers")
    paths += _save(af.plot_rankme(per_task, palette, title), out, "rankme")
    paths += _save(af.plot_probe_vs_head(per_task, palette, title), out, "probe_vs_head")
    return paths


__all__ = ["write_figures", "write_analysis_figures", "method_palette", "acc_seen_frame"]


def sweep_frame(runs: pd.DataFrame, sweeps: dict[str, dict]) -> pd.DataFrame:
    """One row per swept run and seed: its base run, each swept value, and its metrics (tidy, for plotting)."""
    rows = []
    for _, run in runs[runs["method"].isin(list(sweeps))].iterrows():
        point = sweeps[run["method"]]
        for param, value in point["values"].items():
            others = {k: v for k, v in point["values"].items() if k != param}
            line = point["base"] + "".join(f", {k}={v}" for k, v in sorted(others.items()))
            rows.append({"line": line, "base": point["base"], "param": param, "value": value,
                         **{k: run[k] for k in ("seed", "acc", "forgetting")}})
    return pd.DataFrame(rows)


def plot_sweeps(frame: pd.DataFrame, title: str) -> plt.Figure:
    """Final ACC and forgetting against each swept hyperparameter, one line per base run (mean ± sd over seeds)."""
    params = list(dict.fromkeys(frame["param"]))
    fig, axes = plt.subplots(2, len(params), figsize=(4.2 * len(params), 6.4), squeeze=False, constrained_layout=True)
    for col, param in enumerate(params):
        part = frame[frame["param"] == param].copy()
        numeric = pd.to_numeric(part["value"], errors="coerce")
        if numeric.notna().all():
            part["value"] = numeric
        for row, (metric, label) in enumerate((("acc", "final ACC (%)"), ("forgetting", "forgetting (%)"))):
            ax = axes[row, col]
            sns.lineplot(part, x="value", y=metric, hue="line", marker="o", errorbar="sd", ax=ax,
                         legend=row == 0)
            if numeric.notna().all() and numeric.min() > 0 and numeric.max() / numeric.min() >= 20:
                ax.set_xscale("log")
            ax.set_xlabel(param)
            ax.set_ylabel(label)
            ax.set_ylim(0, 100)
            if row == 0 and ax.get_legend():
                ax.get_legend().set_title("")
    fig.suptitle(f"{title}: hyperparameter sweeps (mean ± sd over seeds)")
    return fig


def write_sweep_figure(runs_csv: str, sweeps: dict[str, dict], benchmark: str, backbone: str, out_dir: str) -> list[Path]:
    """The sweep figure of one benchmark × backbone as PNG and PDF (``sweep.png``)."""
    _style()
    runs = pd.read_csv(runs_csv)
    runs = runs[(runs["benchmark"] == benchmark) & (runs["backbone"] == backbone)]
    frame = sweep_frame(runs, sweeps)
    if frame.empty:
        raise ValueError(f"no swept runs of benchmark '{benchmark}' with backbone '{backbone}' in '{runs_csv}'")
    return _save(plot_sweeps(frame, f"{benchmark} / {backbone}"), Path(out_dir), "sweep")
