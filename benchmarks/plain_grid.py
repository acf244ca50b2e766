"""The default digits grid written as one plain PyTorch script: the baseline of benchmarks/grid_vs_process.py.

The same 30 runs as config/config.yaml (split_digits and permuted_digits × naive, joint, EWC, LwF, replay × seeds
0-2, 5 tasks each), with the same data (scikit-learn's digits, the stratified 75/25 split clgrid prepares), model
(MLP 64→256→256→10), optimizer (SGD, lr 0.05, momentum 0.9, a fresh one per task), 10 epochs of batches of 32, and
the methods' definitions with the default config's hyperparameters (EWC λ 100 with one empirical-Fisher penalty per
past task, LwF α 1 and T 2 on the old classes' logits, replay with a class-balanced buffer of 200 whose batches join
the current one) — written plainly, in one process, with none of clgrid's files, checkpoints or provenance.

Random draws (initial weights, batch order, permutations, buffer picks) are not clgrid's, so single runs differ;
means over seeds should agree within a point or two.

    python benchmarks/plain_grid.py --out /tmp/plain.json      # about a minute on one core
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

EPOCHS, BATCH, LR, MOMENTUM = 10, 32, 0.05, 0.9
EWC_LAMBDA, LWF_ALPHA, LWF_T, BUFFER = 100.0, 1.0, 2.0, 200
N_TASKS = 5


def digits():
    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).reshape(len(d.target), -1)
    y = torch.from_numpy(d.target.astype(np.int64))
    return train_test_split(x, y, test_size=0.25, stratify=y.numpy(), random_state=0)


def tasks(kind, x_train, x_test, y_train, y_test):
    """[(x_train, y_train, x_test, y_test, classes)] per task."""
    if kind == "split":
        out = []
        for t in range(N_TASKS):
            classes = [2 * t, 2 * t + 1]
            tr, te = torch.isin(y_train, torch.tensor(classes)), torch.isin(y_test, torch.tensor(classes))
            out.append((x_train[tr], y_train[tr], x_test[te], y_test[te], classes))
        return out
    rng = np.random.default_rng(0)
    perms = [np.arange(64)] + [rng.permutation(64) for _ in range(N_TASKS - 1)]
    return [(x_train[:, p], y_train, x_test[:, p], y_test, list(range(10))) for p in perms]


def mlp():
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def fisher_diag(model, x, y):
    params = [p for p in model.parameters()]
    fisher = [torch.zeros_like(p) for p in params]
    for i in range(len(y)):
        log_p = F.log_softmax(model(x[i:i + 1]), dim=-1)[0, y[i]]
        for f, g in zip(fisher, torch.autograd.grad(log_p, params)):
            f += g ** 2
    return [f / len(y) for f in fisher]


def run(kind, method, seed, data):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = mlp()
    all_tasks = tasks(kind, *data)
    seen: list[int] = []
    penalties: list[tuple[list, list]] = []  # EWC: (fisher, anchor) per past task
    buffer_x, buffer_y, buffer_t = None, None, None
    matrix = []
    for t, (x, y, _, _, classes) in enumerate(all_tasks):
        if method == "joint":
            x = torch.cat([task[0] for task in all_tasks[: t + 1]])
            y = torch.cat([task[1] for task in all_tasks[: t + 1]])
        old_model = copy.deepcopy(model).eval() if method == "lwf" and seen else None
        old_classes = torch.tensor(seen)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        model.train()
        for _ in range(EPOCHS):
            for idx in torch.randperm(len(y), generator=generator).split(BATCH):
                xb, yb = x[idx], y[idx]
                if method == "replay" and buffer_y is not None:
                    pick = torch.randint(len(buffer_y), (len(idx),), generator=generator)
                    xb, yb = torch.cat([xb, buffer_x[pick]]), torch.cat([yb, buffer_y[pick]])
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                if method == "ewc":
                    for fisher, anchor in penalties:
                        for f, p, a in zip(fisher, model.parameters(), anchor):
                            loss = loss + EWC_LAMBDA * 0.5 * (f * (p - a) ** 2).sum()
                if old_model is not None:
                    with torch.no_grad():
                        old_logits = old_model(xb)[:, old_classes]
                    distill = F.kl_div(F.log_softmax(logits[:, old_classes] / LWF_T, -1),
                                       F.log_softmax(old_logits / LWF_T, -1), reduction="batchmean", log_target=True)
                    loss = loss + LWF_ALPHA * LWF_T ** 2 * distill
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        seen = sorted(set(seen) | set(classes))
        if method == "ewc":
            penalties.append((fisher_diag(model, x, y), [p.detach().clone() for p in model.parameters()]))
        if method == "replay":  # class-balanced over (task, class) groups, old groups keep a prefix
            groups = [] if buffer_y is None else [(buffer_x[buffer_t == g[0]][buffer_y[buffer_t == g[0]] == g[1]],
                                                   g) for g in sorted(set(zip(buffer_t.tolist(), buffer_y.tolist())))]
            new = [(x[y == c], (t, int(c))) for c in sorted(set(y.tolist()))]
            share = BUFFER // (len(groups) + len(new))
            kept = [(gx[:share], g) for gx, g in groups]
            kept += [(gx[torch.randperm(len(gx), generator=generator)[:share]], g) for gx, g in new]
            buffer_x = torch.cat([gx for gx, _ in kept])
            buffer_y = torch.cat([torch.full((len(gx),), g[1]) for gx, g in kept])
            buffer_t = torch.cat([torch.full((len(gx),), g[0]) for gx, g in kept])
        with torch.no_grad():
            matrix.append([100.0 * float((model(xt).argmax(1) == yt).float().mean()) for _, _, xt, yt, _ in all_tasks])
    return {"acc": float(np.mean(matrix[-1])), "acc_matrix": matrix}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = digits()
    results = []
    for kind, bench in (("split", "split_digits"), ("permuted", "permuted_digits")):
        for method in ("naive", "joint", "ewc", "lwf", "replay"):
            for seed in (0, 1, 2):
                results.append({"benchmark": bench, "method": method, "seed": seed, **run(kind, method, seed, data)})
                print(f"{bench} {method} s{seed}: ACC {results[-1]['acc']:.1f}", flush=True)
    with open(args.out, "w") as handle:
        json.dump({"seconds_in_process": time.perf_counter() - start, "runs": results}, handle, indent=1)


if __name__ == "__main__":
    main()
