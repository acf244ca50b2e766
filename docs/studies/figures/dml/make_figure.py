"""Tables and figure of the DML reduced reproduction (docs/studies/dml.md) from a finished run of
config/studies/dml_small.yaml: python docs/studies/figures/dml/make_figure.py /work/repro/dml/results"""

import json
import sys
from pathlib import Path

import numpy as np

ROWS = [  # (run folder under results/runs, the study's row it stands for)
    ("flowers17_unseen3/cnn3/baseline", "baseline (EPSHN_cosine_sgd_aug; from scratch)"),
    ("flowers17_unseen3_noaug/cnn3/baseline", "no augmentation (_sgd)"),
    ("flowers17_unseen3/cnn3/adam", "Adam instead of SGD"),
    ("flowers17_unseen3/cnn3/euclidean", "Euclidean instead of cosine"),
    ("flowers17_unseen3/cnn3/frozen_bn", "frozen BN (at its initial identity)"),
    ("flowers17_unseen3_backbones/cnn3_from_classifier/baseline", "classifier first, then metric learning"),
    ("flowers17_unseen3/cnn3/embedding_x4", "embedding 4x (x512)"),
    ("flowers17_unseen3/cnn3/skip_head", "+ gated skip head"),
    ("flowers17_unseen3/cnn3/bn1d", "+ 1-d BN"),
    ("flowers17_unseen3_backbones/cnn3_wide/baseline", "wider CNN, 4x weights (resnet50)"),
    ("flowers17_unseen3/cnn3/proxy_nca", "ProxyNCA"),
    ("flowers17_unseen3/cnn3/arcface", "ArcFace"),
    ("flowers17_unseen3/cnn3/subcenter_arcface", "Sub-center ArcFace"),
    ("flowers17_unseen3/cnn3/classifier", "cross-entropy classifier (k-NN on features)"),
]
SEEDS = (0, 1, 2)


def load(results: Path):
    table = {}
    for run, label in ROWS:
        seen, unseen = [], []
        for seed in SEEDS:
            f = results / "runs" / run / f"s{seed}" / "metrics.json"
            if not f.exists():
                break
            m = json.loads(f.read_text())["metrics"]
            seen.append(m["p_at_1_seen"])
            unseen.append(m["p_at_1_unseen"])
        if len(seen) == len(SEEDS):
            table[run] = (label, np.array(seen), np.array(unseen))
    return table


def fmt(a):
    return f"{a.mean():.1f} ± {a.std(ddof=1):.1f}"


def main(results: Path, out: Path):
    table = load(results)
    base_seen, base_unseen = table[ROWS[0][0]][1:]
    lines = ["| row (the study's) | P@1 seen | P@1 unseen | seen − unseen | per seed (seen / unseen) | "
             "Δ seen vs baseline, per seed | Δ unseen vs baseline, per seed |", "|---|---|---|---|---|---|---|"]
    for run, (label, seen, unseen) in table.items():
        per_seed = ", ".join(f"{s:.1f} / {u:.1f}" for s, u in zip(seen, unseen))
        if run == ROWS[0][0]:
            d_seen = d_unseen = "–"
        else:
            d_seen = ", ".join(f"{d:+.1f}" for d in seen - base_seen)
            d_unseen = ", ".join(f"{d:+.1f}" for d in unseen - base_unseen)
        lines.append(f"| {label} | {fmt(seen)} | {fmt(unseen)} | {fmt(seen - unseen)} | {per_seed} | {d_seen} | "
                     f"{d_unseen} |")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [v[0] for v in table.values()]
    y = np.arange(len(labels))[::-1]
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * len(labels) + 1.2))
    for i, (label, seen, unseen) in enumerate(table.values()):
        ax.plot([seen.mean(), unseen.mean()], [y[i], y[i]], color="0.75", zorder=1)
        ax.scatter(seen, [y[i] + 0.12] * len(seen), s=10, color="tab:blue", alpha=0.5, zorder=2)
        ax.scatter(unseen, [y[i] - 0.12] * len(unseen), s=10, color="tab:orange", alpha=0.5, zorder=2)
        ax.scatter([seen.mean()], [y[i] + 0.12], marker="D", color="tab:blue", zorder=3,
                   label="seen classes (14)" if i == 0 else None)
        ax.scatter([unseen.mean()], [y[i] - 0.12], marker="D", color="tab:orange", zorder=3,
                   label="unseen classes (3, never trained on)" if i == 0 else None)
    ax.axvline(base_seen.mean(), color="tab:blue", ls=":", lw=0.8)
    ax.axvline(base_unseen.mean(), color="tab:orange", ls=":", lw=0.8)
    ax.set_yticks(y, labels)
    ax.set_xlabel("precision@1 (%), 1-NN; diamonds: mean of 3 seeds, dots: each seed")
    ax.set_title("DML rows, reduced: Flowers-17, 32 px, CNN from scratch", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "p_at_1_seen_unseen.png", dpi=130)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).parent)
