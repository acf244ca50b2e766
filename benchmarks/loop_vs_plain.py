"""clgrid's training loop against a minimal plain PyTorch loop, and against clgrid's loop before this change.

One task's training of the same network on the same in-memory tensors, three arms: ``plain`` (randperm batches,
cross-entropy, ``torch.optim.SGD`` with momentum, zero_grad/backward/step: the least a loop can do),
``clgrid_after`` (``clgrid.train.fit_task`` with the naive method, from this checkout's ``src``) and
``clgrid_before`` (the same call from the code at ``--before-rev``, a temporary git worktree, or from the
``src`` of an existing checkout given as ``--before``). Each checkout
runs in a worker process of its own, started once (imports and the first ``torch.optim`` step paid outside the
timings); ``plain`` runs in this checkout's worker. The main process asks the arms in turn, the order rotated each
repeat, so drift of the machine hits every arm alike. Every measurement builds the model afresh from one seed,
runs ``warmup`` untimed steps, then times ``steps`` steps; the arms draw the same batches, so they must end with
the same weights, bit for bit (checked: ``same_final_weights``). Prints samples/s (the median over repeats) and
the ratios to ``plain``; writes ``benchmarks/results/loop_vs_plain.json``.

    python benchmarks/loop_vs_plain.py [--quick] [--threads 1] [--before-rev 58d293e | --before /work/before/src]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Worker, checkout, machine  # noqa: E402

BEFORE_REV = "58d293e"  # main before the speed work (issue 12)

# Timed steps (full run, --quick), warm-up steps and repeats per case: a full run takes about 4 minutes on 2 cores
# at 1 thread, most of it ResNet-18 (about 2.6 s per step there).
CASES = {
    "mlp_digits": {"backbone": {"arch": "mlp", "hidden": [256, 256]}, "input_shape": [1, 8, 8], "dtype": "float32",
                   "batch_size": 32, "steps": (600, 150), "warmup": 30, "repeats": 5,
                   "note": "the default grid's network, input and batch size (split_digits)"},
    "mlp_mnist": {"backbone": {"arch": "mlp", "hidden": [256, 256]}, "input_shape": [1, 28, 28], "dtype": "uint8",
                  "batch_size": 128, "steps": (200, 60), "warmup": 20, "repeats": 5},
    "cnn_cifar": {"backbone": {"arch": "cnn", "channels": [32, 64]}, "input_shape": [3, 32, 32], "dtype": "uint8",
                  "batch_size": 128, "steps": (30, 10), "warmup": 3, "repeats": 5},
    "resnet18_cifar": {"backbone": {"arch": "resnet18"}, "input_shape": [3, 32, 32], "dtype": "uint8",
                       "batch_size": 64, "steps": (6, 3), "warmup": 1, "repeats": 3,
                       "note": "compute-bound on a CPU: the loop's own cost is lost in the noise"},
}
N_CLASSES = 10
TRAIN = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "epochs": 1}


# ---------------------------------------------------------------------------------------------------- worker side
def _case_data(case: str, n_batches: int, seed: int):
    import torch

    spec = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    n = n_batches * spec["batch_size"]
    if spec["dtype"] == "uint8":
        x = torch.randint(0, 256, (n, *spec["input_shape"]), dtype=torch.uint8, generator=gen)
    else:
        x = torch.rand((n, *spec["input_shape"]), generator=gen) * 16  # digits: pixel values 0..16
    return x, torch.randint(0, N_CLASSES, (n,), generator=gen)


def _model(case: str, seed: int):
    import torch

    from clgrid.models import build_model

    torch.manual_seed(seed)
    return build_model(CASES[case]["backbone"], CASES[case]["input_shape"], N_CLASSES)


def _order_generator(seed: int):
    """The generator ``clgrid.train.task_generator(seed, 0)`` gives, so both loops draw the same batches."""
    import numpy as np
    import torch

    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0]).generate_state(1)[0]))


def _plain(model, x, y, batch: int, steps: int, seed: int) -> None:
    """The least a training loop can do: a shuffled order, then forward, loss, zero_grad, backward, step."""
    import torch
    import torch.nn.functional as F

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=TRAIN["lr"], momentum=TRAIN["momentum"])
    order = torch.randperm(len(y), generator=_order_generator(seed))
    for step in range(steps):
        idx = order[step * batch:(step + 1) * batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _clgrid(model, x, y, batch: int, steps: int, seed: int) -> None:
    from clgrid.methods import TaskData, get_method
    from clgrid.train import fit_task, task_generator

    method = get_method("naive")(model, {}, N_CLASSES)
    data = TaskData(0, x, y, list(range(N_CLASSES)))
    fit_task(model, method, data, {**TRAIN, "batch_size": batch, "iterations": steps}, task_generator(seed, 0))


def _digest(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def worker(threads: int) -> None:
    """Answer one JSON request per stdin line: ``{arm, case, steps, warmup, seed}`` -> ``{seconds, samples}``."""
    import torch

    import clgrid

    torch.set_num_threads(threads)
    print(json.dumps({"clgrid": str(Path(clgrid.__file__).parent), "torch": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    loops = {"plain": _plain, "clgrid": _clgrid}
    for line in sys.stdin:
        req = json.loads(line)
        loop, batch, warmup = loops[req["arm"]], CASES[req["case"]]["batch_size"], req["warmup"]
        x, y = _case_data(req["case"], warmup + req["steps"], req["seed"])
        model = _model(req["case"], req["seed"])
        # Warm-up on the first samples (allocator, kernels, lazy imports), timed steps on the rest.
        loop(model, x[: warmup * batch], y[: warmup * batch], batch, warmup, req["seed"])
        x, y = x[warmup * batch:], y[warmup * batch:]
        start = time.perf_counter()
        loop(model, x, y, batch, req["steps"], req["seed"])
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "samples": req["steps"] * batch, "weights": _digest(model)}),
              flush=True)


# ------------------------------------------------------------------------------------------------------ main side
def commit(path: Path) -> str:
    """The git commit a checkout is at, and whether its files differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a check that it runs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every arm (default 1, as a job "
                        "of a --cores 2 grid)")
    parser.add_argument("--repeats", type=int, help="measurements per arm and case (default: the case's, quick 2)")
    parser.add_argument("--before-rev", default=BEFORE_REV, help="the code before (checked out in a temporary "
                        "git worktree)")
    parser.add_argument("--before", type=Path, help="src folder of an existing checkout to use as the code before, "
                        "instead of --before-rev")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "loop_vs_plain.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.threads)
    with tempfile.TemporaryDirectory(prefix="loop_vs_plain.") as tmp:
        before = args.before or checkout(args.before_rev, Path(tmp) / "before_code") / "src"
        try:
            run(args, before)
        finally:
            if args.before is None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before.parent)],
                               capture_output=True)


def run(args, before: Path) -> None:
    this_checkout = Worker(__file__, REPO / "src", ["--threads", str(args.threads)], args.threads)
    workers = {"plain": this_checkout, "clgrid_after": this_checkout, "clgrid_before": Worker(__file__, before, ["--threads", str(args.threads)], args.threads)}
    arms = list(workers)
    loop_of = {"plain": "plain", "clgrid_after": "clgrid", "clgrid_before": "clgrid"}
    start = time.perf_counter()
    results = {}
    for case in args.cases:
        spec = CASES[case]
        steps, warmup = spec["steps"][1 if args.quick else 0], spec["warmup"]
        repeats = args.repeats or (2 if args.quick else spec["repeats"])
        rates: dict[str, list[float]] = {arm: [] for arm in arms}
        digests: dict[str, set[str]] = {arm: set() for arm in arms}
        for rep in range(repeats):
            for arm in arms[rep % len(arms):] + arms[: rep % len(arms)]:  # rotate who goes first
                answer = workers[arm].run(arm=loop_of[arm], case=case, steps=steps, warmup=warmup, seed=rep)
                rates[arm].append(answer["samples"] / answer["seconds"])
                digests[arm].add(f"{rep}:{answer['weights']}")
        median = {arm: statistics.median(r) for arm, r in rates.items()}
        results[case] = {
            **{k: v for k, v in spec.items() if k not in ("steps", "repeats")},
            "timed_steps": steps, "warmup_steps": warmup, "repeats": repeats,
            "samples_per_s": {arm: round(v, 1) for arm, v in median.items()},
            "samples_per_s_each_repeat": {arm: [round(v, 1) for v in r] for arm, r in rates.items()},
            "ratio_to_plain": {arm: round(median[arm] / median["plain"], 3) for arm in arms if arm != "plain"},
            # Same batches, same optimizer arithmetic: every arm must end with the same weights, bit for bit.
            "same_final_weights": len({frozenset(d) for d in digests.values()}) == 1,
        }
        line = "  ".join(f"{arm} {median[arm]:,.0f}" for arm in arms)
        ratios = "  ".join(f"{arm}/plain {results[case]['ratio_to_plain'][arm]:.3f}" for arm in arms if arm != "plain")
        print(f"{case} (batch {spec['batch_size']}, {steps} steps x {repeats}): samples/s {line}  |  {ratios}  |  "
              f"same weights: {results[case]['same_final_weights']}", flush=True)
    wall = time.perf_counter() - start
    info = this_checkout.info
    for worker_ in {id(w): w for w in workers.values()}.values():
        worker_.close()
    result = {
        "benchmark": "loop_vs_plain",
        "mode": "quick" if args.quick else "full",
        "arms": {"plain": "minimal PyTorch loop, torch.optim.SGD(momentum=0.9)",
                 "clgrid_after": f"clgrid.train.fit_task, naive method, from {REPO / 'src'} ({commit(REPO)})",
                 "clgrid_before": f"the same from {before} ({commit(before)})"},
        "before": str(args.before) if args.before else f"rev {args.before_rev}",
        "train": TRAIN,
        "torch_threads": info["threads"],
        "cases": results,
        "wall_s": round(wall, 1),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{wall:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
