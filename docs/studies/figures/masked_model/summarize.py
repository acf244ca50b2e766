"""Tables for docs/studies/masked_model.md from the reduced reproduction's results (run in /work/repro/masked_model)."""
import json
from pathlib import Path

import numpy as np

ROOT = Path("results/runs/split_cifar10_small/resnet18_w8")
METHODS, SEEDS = ["ce", "kd_ema", "masked_kd"], [0, 1, 2]
a = {(m, s): json.loads((ROOT / m / f"s{s}" / "analysis.json").read_text()) for m in METHODS for s in SEEDS}
r = {(m, s): json.loads((ROOT / m / f"s{s}" / "metrics.json").read_text())["metrics"] for m in METHODS for s in SEEDS}


def ms(values):
    v = np.asarray(values, float)
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


print("| method | RankMe after task 1 | 2 | 3 | 4 | 5 | probe acc. after task 5 (%) | head acc. after task 5 (%) | ACC class-IL | ACC task-IL | forgetting class-IL |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for m in METHODS:
    rk = [ms([a[m, s]["rankme"][t] for s in SEEDS]) for t in range(5)]
    print(f"| {m} | " + " | ".join(rk) + f" | {ms([a[m, s]['probe_acc'][-1] for s in SEEDS])} | "
          f"{ms([a[m, s]['head_acc'][-1] for s in SEEDS])} | {ms([r[m, s]['acc'] for s in SEEDS])} | "
          f"{ms([r[m, s]['acc_task_il'] for s in SEEDS])} | {ms([r[m, s]['forgetting'] for s in SEEDS])} |")
print()
print("| paired difference (per seed 0, 1, 2) | final RankMe | mean RankMe over tasks | final probe acc. | ACC class-IL | ACC task-IL |")
print("|---|---|---|---|---|---|")
for m in METHODS[1:]:
    cells = []
    for f in (lambda x, s: a[x, s]["rankme"][-1], lambda x, s: np.mean(a[x, s]["rankme"]),
              lambda x, s: a[x, s]["probe_acc"][-1], lambda x, s: r[x, s]["acc"], lambda x, s: r[x, s]["acc_task_il"]):
        d = [f(m, s) - f("ce", s) for s in SEEDS]
        cells.append(f"{np.mean(d):+.1f} ({', '.join(f'{x:+.1f}' for x in d)})")
    print(f"| {m} − ce | " + " | ".join(cells) + " |")
print()
for m in METHODS:
    for s in SEEDS:
        print(m, s, "rankme", [round(x, 1) for x in a[m, s]["rankme"]], "probe", [round(x, 1) for x in a[m, s]["probe_acc"]],
              "head", [round(x, 1) for x in a[m, s]["head_acc"]])
