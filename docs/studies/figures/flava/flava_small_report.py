"""Tables and figures of docs/studies/flava.md from the results of config/studies/flava_small.yaml.

    python docs/studies/figures/flava/flava_small_report.py /work/repro/flava/results docs/studies/figures/flava

Reads results/tables/runs.csv and results/compare/split_flowers17/cnn_pre/*/s*/cka.json; prints the markdown tables
(accuracy per method and freezing, paired differences per seed, CKA per block) and writes two PNGs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

BENCH, BACKBONE = "split_flowers17", "cnn_pre"
METHODS = ("naive", "ewc", "replay")
FREEZES = ("frozen", "partial", "full")
LABEL = {"frozen": "frozen", "partial": "partly frozen", "full": "unfrozen"}
METRICS = {"acc": "ACC class-IL", "acc_task_il": "ACC task-IL", "forgetting_task_il": "Forgetting task-IL"}


def _ms(values, digits: int = 1) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def accuracy_tables(runs: pd.DataFrame) -> str:
    here = runs[(runs.benchmark == BENCH)]
    lines = ["| method | backbone | " + " | ".join(f"{label} (mean ± sd; per seed)" for label in METRICS.values())
             + " |", "|---|---|" + "---|" * len(METRICS)]
    for method in METHODS:
        for freeze in FREEZES:
            rows = here[(here.backbone == BACKBONE) & (here.method == f"{method}_{freeze}")].sort_values("seed")
            cells = [f"{_ms(rows[m])}; {' / '.join(f'{x:.1f}' for x in rows[m])}" for m in METRICS]
            lines.append(f"| {method} | {LABEL[freeze]} (pretrained) | " + " | ".join(cells) + " |")
    rows = here[(here.backbone == "cnn")].sort_values("seed")
    if len(rows):
        cells = [f"{_ms(rows[m])}; {' / '.join(f'{x:.1f}' for x in rows[m])}" for m in METRICS]
        lines.append("| naive | unfrozen, random init (no stage 1) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(runs: pd.DataFrame) -> str:
    """Differences within a seed (the same pretrained backbone): frozen - unfrozen and partly frozen - frozen."""
    here = runs[(runs.benchmark == BENCH) & (runs.backbone == BACKBONE)]
    lines = ["| method | difference | metric | per seed (s0 / s1 / s2) | mean | sign in all seeds |",
             "|---|---|---|---|---|---|"]
    for method in METHODS:
        by = {f: here[here.method == f"{method}_{f}"].set_index("seed").sort_index() for f in FREEZES}
        for a, b in (("frozen", "full"), ("partial", "frozen"), ("partial", "full")):
            for metric in ("acc", "acc_task_il"):
                d = (by[a][metric] - by[b][metric]).to_numpy()
                sign = "+" if (d > 0).all() else "−" if (d < 0).all() else "mixed"
                lines.append(f"| {method} | {LABEL[a]} − {LABEL[b]} | {METRICS[metric]} | "
                             f"{' / '.join(f'{x:+.1f}' for x in d)} | {d.mean():+.1f} | {sign} |")
    return "\n".join(lines)


def load_cka(results: Path) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(method, freeze) -> layer -> array seeds x tasks of CKA against the frozen run of the same seed."""
    out: dict = {}
    for path in sorted((results / "compare" / BENCH / BACKBONE).glob("*__vs__*/s*/cka.json")):
        record = json.loads(path.read_text())
        method, freeze = path.parts[-3].split("__vs__")[0].split("_", 1)
        for layer, values in record["cka_per_layer"].items():
            out.setdefault((method, freeze), {}).setdefault(layer, []).append(values)
    return {k: {layer: np.array(v) for layer, v in layers.items()} for k, layers in out.items()}


def cka_table(cka) -> str:
    layers = list(next(iter(cka.values())))
    lines = ["| method | against frozen | " + " | ".join(f"`{l}`" for l in layers) + " |",
             "|---|---|" + "---|" * len(layers)]
    for method in METHODS:
        for freeze in ("partial", "full"):
            if (method, freeze) in cka:
                lines.append(f"| {method} | {LABEL[freeze]} | " + " | ".join(
                    _ms(cka[(method, freeze)][l][:, -1], 3) for l in layers) + " |")
    return "\n".join(lines)


def cka_figure(cka, out: Path) -> None:
    layers = list(next(iter(cka.values())))
    fig, axes = plt.subplots(1, len(METHODS), figsize=(11, 3.4), sharey=True, constrained_layout=True)
    x = np.arange(len(layers))
    for ax, method in zip(axes, METHODS):
        for freeze, colour in (("partial", "tab:orange"), ("full", "tab:red")):
            values = cka[(method, freeze)]
            last = np.stack([values[l][:, -1] for l in layers], axis=1)  # seeds x layers, after the last task
            for seed_row in last:
                ax.plot(x, seed_row, color=colour, alpha=0.35, lw=0.8)
            ax.plot(x, last.mean(0), color=colour, lw=2, marker="o", label=f"{LABEL[freeze]} vs frozen")
        ax.set_xticks(x, [l.replace("backbone.", "") for l in layers])
        ax.set_title(method)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("linear CKA after the last task")
    axes[0].legend(frameon=False, fontsize=8, loc="lower left")
    fig.suptitle("Split Flowers-17, CNN pretrained on CIFAR-10: CKA to the frozen model per block "
                 "(thin: each seed; thick: mean of 3)")
    fig.savefig(out, dpi=130)


def accuracy_figure(runs: pd.DataFrame, out: Path) -> None:
    here = runs[(runs.benchmark == BENCH) & (runs.backbone == BACKBONE)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True)
    colours = {"frozen": "tab:blue", "partial": "tab:orange", "full": "tab:red"}
    for ax, metric in zip(axes, ("acc", "acc_task_il")):
        for i, method in enumerate(METHODS):
            for j, freeze in enumerate(FREEZES):
                vals = here[here.method == f"{method}_{freeze}"].sort_values("seed")[metric].to_numpy()
                pos = i * 4 + j
                ax.bar(pos, vals.mean(), color=colours[freeze], alpha=0.6,
                       label=LABEL[freeze] if i == 0 else None)
                ax.scatter([pos] * len(vals), vals, color="k", s=10, zorder=3)
        ax.set_xticks([i * 4 + 1 for i in range(len(METHODS))], METHODS)
        ax.set_ylabel(f"{METRICS[metric]} after the last task (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle("Split Flowers-17 (4 tasks), CNN pretrained on CIFAR-10: bars mean of 3 seeds, dots each seed")
    fig.savefig(out, dpi=130)


def main(results: str, out_dir: str) -> None:
    results_path, out = Path(results), Path(out_dir)
    runs = pd.read_csv(results_path / "tables" / "runs.csv")
    pre = runs[runs.benchmark == "cifar10_pre"].sort_values("seed")
    print(f"Stage 1 (CIFAR-10 test accuracy of the pretrained CNN): {_ms(pre['acc'])}; "
          f"{' / '.join(f'{x:.1f}' for x in pre['acc'])}\n")
    print(accuracy_tables(runs), "\n")
    print(paired_table(runs), "\n")
    cka = load_cka(results_path)
    print(cka_table(cka))
    cka_figure(cka, out / "cka_per_block.png")
    accuracy_figure(runs, out / "accuracy.png")


if __name__ == "__main__":
    main(*sys.argv[1:3])
