"""Figures of the representation analyses: CKA curves and layer maps, RankMe, probe vs head."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

MAX_COLUMNS = 6  # panels per row; many methods wrap into rows
MANY_METHODS = 8  # beyond this a legend beside the axes gets taller than the figure


def panel_grid(n: int, width: float, height: float, **kwargs) -> tuple[plt.Figure, list[plt.Axes]]:
    """``n`` panels in rows of at most ``MAX_COLUMNS``; unused cells hidden."""
    cols = min(max(n, 1), MAX_COLUMNS)
    rows = -(-max(n, 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1.4, height * rows), squeeze=False,
                             constrained_layout=True, **kwargs)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def method_legend(fig: plt.Figure, ax: plt.Axes, n_methods: int, **kwargs) -> None:
    """The legend beside the axes for a few methods; under the figure, in columns, for many."""
    if n_methods <= MANY_METHODS:
        ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False, **kwargs)
        return
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncol=6, frameon=False, fontsize=8, **kwargs)


def plot_cka_curves(cka: pd.DataFrame, palette: dict, title: str) -> plt.Figure:
    """CKA between each layer after task 1 and after task t; one panel per layer, a line per method."""
    layers = list(dict.fromkeys(cka["layer"]))
    fig, axes = plt.subplots(1, len(layers), figsize=(3.4 * len(layers) + 1.6, 3.3), squeeze=False,
                             sharey=True, constrained_layout=True)
    frame = cka.assign(task=cka["after_task"] + 1)
    for ax, layer in zip(axes[0], layers):
        sns.lineplot(data=frame[frame["layer"] == layer], x="task", y="cka", hue="method", hue_order=list(palette),
                     palette=palette, errorbar="sd", marker="o", ax=ax, legend=layer == layers[-1])
        ax.set_title(layer)
        ax.set_ylim(0, 1.02)
        ax.set_xticks(range(1, int(frame["task"].max()) + 1))
        ax.set_xlabel("after training task")
        ax.set_ylabel("linear CKA to the same layer after task 1")
    method_legend(fig, axes[0][-1], len(palette), title="method")
    fig.suptitle(f"{title}: representation drift per layer (minibatch linear CKA, ± sd over seeds)")
    return fig


def plot_cka_layer_maps(maps: dict[str, np.ndarray], layers: list[str], title: str) -> plt.Figure:
    """Layer × layer CKA between the model after task 1 (rows) and after the last task (columns), per method."""
    n = len(maps)
    size = 0.7 * len(layers) + 1.6
    fig, axes = panel_grid(n, size, size + 0.5)
    cols = min(n, MAX_COLUMNS)
    for i, (ax, (method, matrix)) in enumerate(zip(axes, maps.items())):
        sns.heatmap(pd.DataFrame(matrix, index=layers, columns=layers), ax=ax, vmin=0, vmax=1, cmap="magma",
                    annot=True, fmt=".2f", annot_kws={"size": 7}, square=True,
                    cbar=i % cols == cols - 1 or i == n - 1, cbar_kws={"label": "linear CKA", "shrink": 0.8})
        ax.set_title(method)
        ax.set_xlabel("after last task")
        ax.set_ylabel("after task 1" if i % cols == 0 else "")
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
    fig.suptitle(f"{title}: layer × layer CKA, first vs last checkpoint (mean over seeds)")
    return fig


def plot_rankme(frame: pd.DataFrame, palette: dict, title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.5), constrained_layout=True)
    data = frame.assign(task=frame["after_task"] + 1)
    sns.lineplot(data=data, x="task", y="rankme", hue="method", hue_order=list(palette), palette=palette,
                 errorbar="sd", marker="o", ax=ax)
    ax.set_xticks(range(1, int(data["task"].max()) + 1))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("after training task")
    ax.set_ylabel("RankMe of backbone features")
    ax.set_title(f"{title}: effective rank (Garrido et al. 2023)")
    method_legend(fig, ax, len(palette), title="method")
    return fig


def plot_probe_vs_head(frame: pd.DataFrame, palette: dict, title: str) -> plt.Figure:
    """Accuracy on seen tasks: the model's own head (solid) and a linear probe on its features (dashed)."""
    methods = [m for m in palette if m in set(frame["method"])]
    fig, axes = panel_grid(len(methods), 2.6, 3.2, sharey=True)
    data = frame.assign(task=frame["after_task"] + 1)
    long = data.melt(id_vars=["method", "seed", "task"], value_vars=["head_acc", "probe_acc"],
                     var_name="readout", value_name="acc")
    long["readout"] = long["readout"].map({"head_acc": "model head", "probe_acc": "linear probe"})
    for ax, method in zip(axes, methods):
        sns.lineplot(data=long[long["method"] == method], x="task", y="acc", style="readout",
                     style_order=["model head", "linear probe"], color=palette[method], errorbar="sd",
                     marker="o", ax=ax, legend=method == methods[-1])
        ax.set_title(method)
        ax.set_ylim(0, 102)
        ax.set_xticks(range(1, int(data["task"].max()) + 1))
        ax.set_xlabel("after task")
        ax.set_ylabel("accuracy on seen tasks (%)")
    if methods:
        axes[-1].legend(bbox_to_anchor=(1.02, 1), loc="upper left", frameon=False)
    fig.suptitle(f"{title}: the head forgets more than the features when the probe stays high")
    return fig
