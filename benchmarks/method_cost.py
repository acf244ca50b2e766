"""Per-step cost of every CL method relative to naive fine-tuning, before and after the flat-vector rewrite.

Benchmark 3 of the "Speed" issue. The data is what the default config builds (split_digits, 5 tasks of 2 digits);
each method trains task 0 with ``clgrid.train.fit_task`` (``warm_steps`` steps, then its ``after_task``: Fishers,
buffers, bases, exemplars), so regularisers have state, then task 1 through the hooks in the order ``fit_task``
calls them (``training_data``, ``before_task``, then per step ``forward``, ``loss``, backward, ``after_backward``,
optimizer step, ``after_step``). That per-step body is written out here, the same in both arms, so only the
methods (and the arm's optimizer) differ; ``warmup`` untimed steps, then ``blocks`` timed blocks of ``steps``
steps; a step's cost is the median block. The task's end (``after_task``, once) is timed apart: not per step.

Two arms, each a worker process started once: ``after`` (this checkout's ``src``) and ``before`` (an older
checkout's ``src``, by default a git worktree of ``--before-rev``). Each method is measured ``rounds`` times per arm, the order of
the arms alternating, so drift of the machine hits both alike; naive is measured first and last. Every worker
runs ``torch.set_num_threads(1)`` (a job of a ``--cores 2`` grid). Both arms must end with the same weights, bit
for bit (the rewrite changes no number): the table says so.
Prints per method ms/step, the ratio to naive (before, after), the after/before speedup of the step and of the
method's own overhead (ms above naive), and flags every method above 3x naive with the reason; writes
``benchmarks/results/method_cost.json`` with the machine description.

    python benchmarks/method_cost.py [--quick] [--before /work/before/src] [--backbones mlp cnn]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import Worker, checkout, machine  # noqa: E402

BACKBONES = {"mlp": {"arch": "mlp", "hidden": [256, 256]}, "cnn": {"arch": "cnn", "channels": [32, 64]}}
TRAIN = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 32}  # the default grid's
# Per request: warm_steps of task 0 (12: one epoch of a digits task), warmup untimed steps, blocks x steps timed.
# Each (backbone, method) is asked of both arms ``rounds`` times, the arms' order alternating: about 2 minutes on
# 2 cores for mlp and cnn.
FULL = {"warm_steps": 12, "warmup": 5, "steps": 20, "blocks": 5, "rounds": 2}
QUICK = {"warm_steps": 8, "warmup": 2, "steps": 5, "blocks": 2, "rounds": 1}
# Options a method needs on a backbone (the CNN has no Linear layer in its backbone for LoRA to adapt).
METHOD_PARAMS = {("lora", "cnn"): {"target_modules": ["head"]}}
FLAG_RATIO = 3.0

# Why a method costs more than naive per step by definition (shown for those above FLAG_RATIO).
WHY = {
    "agem": "a second forward and backward per step, on a memory batch of 256 (mem_batch_size), and the projection",
    "ogd": "the projection reads the whole basis twice per step (two matrix-vector products with k x P floats; "
           "k = 200 stored directions per earlier task)",
    "replay": "a second batch (from the buffer) through forward and backward",
    "der": "a buffer batch through forward and backward (logit MSE), and the reservoir insertion",
    "derpp": "two buffer batches (logit MSE and labels) through forward and backward, and the reservoir insertion",
    "icarl": "a forward of the old model (distillation targets) on every batch",
    "lwf": "a forward of the previous task's model (the teacher) on every batch",
    "kd_ema": "a forward of the EMA teacher on every batch and its update after every step",
    "masked_kd": "a forward of the EMA teacher on every batch (with masked tokens) and its update after every step",
    "wise_ft": "with mode ema: a running average of the weights after every step",
    "ewc": "one quadratic penalty per earlier task on P-sized vectors (the Fisher itself is computed at the "
           "task's end, not per step)",
    "ewc_online": "one quadratic penalty on P-sized vectors (the Fisher is computed at the task's end)",
    "si": "the penalty, the task-loss gradient and the path integral: a few P-sized vector ops per step",
    "l2_init": "one quadratic penalty on P-sized vectors",
    "dml": "pairwise distances and mining within the batch, and an embedding head",
    "lora": "the low-rank adapters' extra matrix products",
    "gdumb": "nothing per step: it trains on its memory from the initial weights",
    "joint": "nothing per step: it trains on all tasks' data so far",
}


# ---------------------------------------------------------------------------------------------------- worker side
def _digest(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def measure(data: dict, backbone: str, name: str, setup: dict) -> dict:
    """Train task 0 with ``fit_task``, then time task 1's steps and its ``after_task`` (see the module docstring)."""
    import torch

    from clgrid.methods import TaskData, get_method
    from clgrid.models import build_model
    from clgrid.train import fit_task, make_optimizer, task_generator

    tasks = [TaskData(i, x, y, list(classes)) for i, (x, y, classes) in enumerate(data["tasks"])]

    def load_task(i: int) -> TaskData:
        return tasks[i]

    torch.manual_seed(0)
    model = build_model(BACKBONES[backbone], data["input_shape"], data["n_classes"], input_norm=data["input_norm"])
    method = get_method(name)(model, METHOD_PARAMS.get((name, backbone), {}), data["n_classes"])
    first = method.training_data(tasks[0], load_task)
    fit_task(model, method, first, {**TRAIN, "iterations": setup["warm_steps"]}, task_generator(0, 0))

    data1 = method.training_data(tasks[1], load_task)
    generator = task_generator(0, 1)
    method.before_task(data1, generator)
    trainable = [p for p in model.parameters() if p.requires_grad] + method.extra_parameters()
    optimizer = make_optimizer(trainable, {**TRAIN, "lr": TRAIN["lr"] * method.params["lr_scale"]})
    method.train_mode()

    def batches():
        while True:
            yield from data1.order(generator).split(TRAIN["batch_size"])

    stream = batches()

    def run(n: int) -> None:
        for _ in range(n):  # fit_task's per-step body
            idx = next(stream)
            x, y = data1.x[idx], data1.y[idx]
            loss = method.loss(x, y, method.forward(x))
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(f"{name}: loss {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.after_backward()
            optimizer.step()
            method.after_step()
            float(loss.detach())
            method.raw_batch = None

    run(setup["warmup"])
    per_step = []
    for _ in range(setup["blocks"]):
        start = time.perf_counter()
        run(setup["steps"])
        per_step.append((time.perf_counter() - start) / setup["steps"])
    model.eval()
    start = time.perf_counter()
    method.after_task(data1)
    task_end = time.perf_counter() - start
    return {"step_s": statistics.median(per_step), "step_s_each_block": per_step, "task_end_s": task_end,
            "weights": _digest(model)}


def worker(data_path: str) -> None:
    """Answer one JSON request per stdin line: ``{backbone, method, setup}`` -> ``measure``'s dict."""
    import torch

    import clgrid
    from clgrid.methods import GENERIC_METHODS

    torch.set_num_threads(1)
    data = torch.load(data_path, weights_only=False)
    print(json.dumps({"clgrid": str(Path(clgrid.__file__).parent), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "methods": sorted(GENERIC_METHODS)}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            answer = measure(data, req["backbone"], req["method"], req["setup"])
        except Exception as err:  # noqa: BLE001 - reported in the table, the other methods go on
            answer = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(answer), flush=True)


# ------------------------------------------------------------------------------------------------------ main side
def prepare_data(root: Path) -> Path:
    """Tasks 0 and 1 of split_digits as the default config builds them, saved for the workers."""
    import torch

    from clgrid import config as cl
    from clgrid import jobs
    from clgrid.context import load_datasets
    from clgrid.data.scenarios import task_arrays
    from clgrid.inprocess import validated
    from clgrid.io import read_json

    config = validated(REPO / "config/config.yaml", REPO / "workflow/schemas/config.schema.yaml")
    dataset, scenario_path = str(root / "digits.npz"), str(root / "split_digits.json")
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), dataset)
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), [dataset], scenario_path)
    scenario = read_json(scenario_path)
    arrays = load_datasets([dataset], ["digits"])
    tasks = []
    for task_id in (0, 1):
        x, y = task_arrays(arrays, scenario, task_id, "train")
        tasks.append((torch.from_numpy(x), torch.from_numpy(y), scenario["tasks"][task_id]["classes"]))
    out = root / "tasks.pt"
    torch.save({"tasks": tasks, "input_shape": scenario["input_shape"], "n_classes": scenario["n_classes"],
                "input_norm": scenario.get("input_norm")}, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MLP only, fewer steps (a check that it runs)")
    parser.add_argument("--before-rev", default="58d293e", help="the commit before (checked out as a git worktree)")
    parser.add_argument("--before", type=Path, help="src folder of an existing older checkout, instead of --before-rev")
    parser.add_argument("--backbones", nargs="+", choices=sorted(BACKBONES), help="default: mlp cnn (quick: mlp)")
    parser.add_argument("--methods", nargs="+", help="default: every registered method that needs no CLIP")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "method_cost.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if args.before is None:
        args.before = checkout(args.before_rev, Path(tempfile.gettempdir()) / f"clgrid-before-{args.before_rev}") / "src"
    if not (args.before / "clgrid").is_dir():
        raise SystemExit(f"no older checkout at {args.before}: make one (git worktree add /work/before <rev>) or "
                         "pass --before <its src folder>")
    setup = QUICK if args.quick else FULL
    backbones = args.backbones or (["mlp"] if args.quick else ["mlp", "cnn"])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_path = prepare_data(Path(tmp))
        workers = {"before": Worker(__file__, args.before, [str(data_path)]), "after": Worker(__file__, REPO / "src", [str(data_path)])}
        methods = args.methods or sorted(set(workers["before"].info["methods"]) & set(workers["after"].info["methods"]))
        # naive first and last: the baseline is the median of both, so a drift over the run shows and averages out.
        order = ["naive"] + [m for m in methods if m != "naive"] + ["naive"]
        raw: dict = {}
        for backbone in backbones:
            for arm in workers:  # untimed: the first request of a process pays lazy imports and allocations
                workers[arm].run(backbone=backbone, method="naive", setup=setup)
            for i, name in enumerate(order):
                for round_ in range(setup["rounds"]):
                    arms = ["before", "after"] if (i + round_) % 2 == 0 else ["after", "before"]
                    for arm in arms:
                        answer = workers[arm].run(backbone=backbone, method=name, setup=setup)
                        raw.setdefault(backbone, {}).setdefault(name, {}).setdefault(arm, []).append(answer)
                    print(f"  {backbone} {name}: " + ", ".join(
                        f"{arm} {raw[backbone][name][arm][-1].get('step_s', float('nan')) * 1e3:.2f} ms"
                        for arm in arms), flush=True)
        info = workers["after"].info
        for w in workers.values():
            w.close()
    result = summarise(raw, backbones)
    wall = time.perf_counter() - start
    print_table(result, backbones)
    out = {
        "benchmark": "method_cost",
        "mode": "quick" if args.quick else "full",
        "what": "seconds per training step of each method on task 1 of split_digits (after training task 0), "
                "relative to naive; fit_task's per-step hooks, batch 32, SGD lr 0.05 momentum 0.9, 1 torch thread",
        "arms": {"before": str(args.before), "after": str(REPO / "src")},
        "setup": {**setup, "backbones": {b: BACKBONES[b] for b in backbones}, "train": TRAIN,
                  "method_params": "each method's defaults, except "
                                   + ", ".join(f"{m} on {b}: {p}" for (m, b), p in METHOD_PARAMS.items())},
        "flag_ratio": FLAG_RATIO,
        "results": result,
        "notes": [
            "step_ms: median over all timed blocks of all rounds; ratio_vs_naive: step_ms / naive's step_ms in the "
            "same arm (naive measured first and last, the median of both); speedup: before step / after step; "
            "overhead_speedup: (before - naive) / (after - naive), the method's own cost above naive (null where "
            "it is within noise).",
            "The optimizer is each arm's own (clgrid.train.make_optimizer): a change there moves naive too; the "
            "ratios to naive and the overhead speedup leave it out.",
            "task_end_s: the method's after_task on task 1 (Fisher, basis, exemplars, buffer): once per task, "
            "not per step.",
            "same_weights: the two arms' weights after task 1's steps and after_task, compared bit for bit.",
        ],
        "wall_s": round(wall, 1),
        "machine": {**machine(), "torch_threads": info["threads"], "torch": info["torch"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{wall:.0f} s; wrote {args.out}")


def summarise(raw: dict, backbones: list[str]) -> dict:
    """Per backbone and method: ms per step, ratios to naive, speedups, the flag and its reason."""
    result = {}
    for backbone in backbones:
        runs = raw[backbone]
        naive = {arm: statistics.median(s for r in runs["naive"][arm] for s in r["step_s_each_block"])
                 for arm in ("before", "after")}
        rows = {}
        for name, arms in runs.items():
            errors = {arm: a[0]["error"] for arm, a in arms.items() if "error" in a[0]}
            if errors:
                rows[name] = {"error": errors}
                continue
            step = {arm: statistics.median(s for r in a for s in r["step_s_each_block"]) for arm, a in arms.items()}
            ratio = {arm: step[arm] / naive[arm] for arm in step}
            extra = {arm: step[arm] - naive[arm] for arm in step}
            # Below 5 % of naive's step the method's own cost is within the timing noise: no overhead ratio.
            noise = 0.05 * max(naive.values())
            row = {
                "step_ms": {arm: round(s * 1e3, 4) for arm, s in step.items()},
                "ratio_vs_naive": {arm: round(r, 2) for arm, r in ratio.items()},
                "speedup": round(step["before"] / step["after"], 2),
                "overhead_ms": {arm: round(e * 1e3, 4) for arm, e in extra.items()},
                "overhead_speedup": round(extra["before"] / extra["after"], 2)
                if min(extra.values()) > noise else None,
                "task_end_s": {arm: round(statistics.median(r["task_end_s"] for r in a), 4)
                               for arm, a in arms.items()},
                "same_weights": len({r["weights"] for a in arms.values() for r in a}) == 1,
                "over_3x_naive": ratio["after"] > FLAG_RATIO,
            }
            if row["over_3x_naive"]:
                row["why"] = WHY.get(name, "not explained: look into it")
            rows[name] = row
        result[backbone] = rows
    return result


def print_table(result: dict, backbones: list[str]) -> None:
    for backbone in backbones:
        rows = result[backbone]
        print(f"\n{backbone} {BACKBONES[backbone]}, batch {TRAIN['batch_size']}, 1 thread")
        print(f"{'method':12s} {'ms/step before':>14s} {'after':>8s} {'x naive before':>15s} {'after':>7s} "
              f"{'speedup':>8s} {'overhead speedup':>17s} {'task end s before':>18s} {'after':>7s}  same weights")
        for name in sorted(rows):
            row = rows[name]
            if "error" in row:
                print(f"{name:12s} error: {str(row['error'])[:150]}")
                continue
            over = row["overhead_speedup"]
            print(f"{name:12s} {row['step_ms']['before']:14.3f} {row['step_ms']['after']:8.3f} "
                  f"{row['ratio_vs_naive']['before']:15.2f} {row['ratio_vs_naive']['after']:7.2f} "
                  f"{row['speedup']:8.2f} {('-' if over is None else f'{over:.2f}'):>17s} "
                  f"{row['task_end_s']['before']:18.3f} {row['task_end_s']['after']:7.3f}  {row['same_weights']}"
                  + ("   > 3x naive" if row["over_3x_naive"] else ""))
        flagged = [n for n in sorted(rows) if rows[n].get("over_3x_naive")]
        for name in flagged:
            print(f"  {name} at {rows[name]['ratio_vs_naive']['after']:.1f}x naive: {rows[name]['why']}")


if __name__ == "__main__":
    main()
