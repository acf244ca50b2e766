"""Training throughput on one CUDA GPU: clgrid's loop in fp32 and bf16, against a plain loop, in samples/s and TFLOP/s.

Two networks with random weights: ResNet-18 (CIFAR stem) on 3x32x32 images and torchvision's ViT-B/16 on 3x224x224.
For each, one task's training through ``clgrid.train.fit_task`` (naive method, SGD with momentum, data on the GPU
as uint8, ``train.precision`` fp32 then bf16, channels-last as ``auto`` picks it, cuDNN autotuning on as
``clgrid.device.configure_device`` sets it) and through a minimal PyTorch loop doing the same (autocast,
channels-last, ``torch.optim.SGD``, no per-step host sync). FLOPs of one training step (forward and backward) are
counted with ``torch.utils.flop_counter.FlopCounterMode``; achieved TFLOP/s are compared with the GPU's dense bf16
peak (a table by device name below; unknown GPUs get no ratio). Warm-up steps are excluded; the GPU is synchronised
around each timed run. Prints a table; writes ``benchmarks/results/gpu_throughput.json``.

Needs a CUDA GPU: without one it says so and writes nothing.

    python benchmarks/gpu_throughput.py [--quick] [--models resnet18_32px vit_b_16_224px]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine  # noqa: E402

sys.path.insert(0, str(REPO / "src"))
# One source for the peak table, the model and data builders, the FLOP count and clgrid's loop: `clgrid doctor`
# measures its throughput rows with the same functions.
from clgrid.throughput import PEAK_BF16_TFLOPS, peak_bf16_tflops  # noqa: E402,F401
from clgrid import throughput as tp  # noqa: E402

MODELS = {
    "resnet18_32px": {"backbone": {"arch": "resnet18"}, "input_shape": [3, 32, 32], "batch_size": 256,
                      "steps": (60, 15), "warmup": 10},
    "vit_b_16_224px": {"backbone": {"arch": "vit_b_16"}, "input_shape": [3, 224, 224], "batch_size": 64,
                       "steps": (20, 6), "warmup": 5},
}
N_CLASSES = 100
TRAIN = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "epochs": 1}


def build(name: str, device):
    spec = MODELS[name]
    return tp.build(spec["backbone"], spec["input_shape"], N_CLASSES, device)


def batches(name: str, n_batches: int, device):
    spec = MODELS[name]
    return tp.random_batches(spec["input_shape"], N_CLASSES, n_batches * spec["batch_size"], device)


def step_flops(name: str, device) -> int:
    """FLOPs of one training step (forward, loss, backward) at the case's batch size."""
    return tp.step_flops(build(name, device), *batches(name, 1, device))


def clgrid_loop(model, x, y, batch: int, steps: int, precision: str) -> None:
    from clgrid.methods import get_method

    tp.fit_steps(model, get_method("naive")(model, {}, N_CLASSES), x, y, batch, steps, {"precision": precision})


def plain_loop(model, x, y, batch: int, steps: int, precision: str) -> None:
    """What a hand-written fast loop does: autocast, channels-last for conv nets, foreach SGD, no host sync."""
    import torch
    import torch.nn.functional as F

    from clgrid.device import uses_channels_last

    channels_last = uses_channels_last("auto", x.device, model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=TRAIN["lr"], momentum=TRAIN["momentum"])
    order = torch.randperm(len(y), device=x.device)
    for step in range(steps):
        idx = order[step * batch:(step + 1) * batch]
        xb = x[idx]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(xb), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if channels_last:
        model.to(memory_format=torch.contiguous_format)


def measure(name: str, loop, precision: str, steps: int, warmup: int, repeats: int, device) -> list[float]:
    """samples/s of ``repeats`` timed runs of ``steps`` steps, each after ``warmup`` untimed ones."""
    import torch

    batch = MODELS[name]["batch_size"]
    x, y = batches(name, warmup + steps, device)
    rates = []
    for _ in range(repeats):
        model = build(name, device)
        loop(model, x[: warmup * batch], y[: warmup * batch], batch, warmup, precision)
        torch.cuda.synchronize()
        start = time.perf_counter()
        loop(model, x[warmup * batch:], y[warmup * batch:], batch, steps, precision)
        torch.cuda.synchronize()
        rates.append(steps * batch / (time.perf_counter() - start))
        del model
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and one repeat (a check that it runs)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_throughput.json")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_throughput.py measures a CUDA GPU, and torch sees none here (torch.cuda.is_available() is "
                 "False); nothing was written. Run it on a GPU machine.")
    from clgrid.device import configure_device

    device = torch.device("cuda")
    configure_device(device, {})  # the defaults a job gets: cuDNN autotuning, no deterministic kernels
    gpu = torch.cuda.get_device_name(device)
    peak = peak_bf16_tflops(gpu)
    repeats = 1 if args.quick else args.repeats
    results = {}
    start = time.perf_counter()
    for name in args.models:
        spec = MODELS[name]
        steps = spec["steps"][1 if args.quick else 0]
        flops = step_flops(name, device)
        rows = {}
        for precision in ("fp32", "bf16"):
            for loop_name, loop in (("clgrid", clgrid_loop), ("plain", plain_loop)):
                rates = measure(name, loop, precision, steps, spec["warmup"], repeats, device)
                rate = statistics.median(rates)
                tflops = flops / spec["batch_size"] * rate / 1e12
                rows[f"{loop_name}_{precision}"] = {
                    "samples_per_s": round(rate, 1), "samples_per_s_each_repeat": [round(r, 1) for r in rates],
                    "tflops": round(tflops, 1), "fraction_of_bf16_peak": round(tflops / peak, 3) if peak else None}
                print(f"{name:16s} {loop_name:6s} {precision}: {rate:9,.0f} samples/s  {tflops:7.1f} TFLOP/s"
                      + (f"  ({100 * tflops / peak:.1f}% of the {peak:g} TFLOP/s bf16 peak)" if peak else ""),
                      flush=True)
        rate = {run: row["samples_per_s"] for run, row in rows.items()}
        results[name] = {
            **{k: v for k, v in spec.items() if k != "steps"}, "timed_steps": steps, "repeats": repeats,
            "gflop_per_training_step": round(flops / 1e9, 1), "runs": rows,
            "clgrid_over_plain": {p: round(rate[f"clgrid_{p}"] / rate[f"plain_{p}"], 3) for p in ("fp32", "bf16")},
            "bf16_speedup_clgrid": round(rate["clgrid_bf16"] / rate["clgrid_fp32"], 2),
        }
        print(f"{name}: clgrid/plain {results[name]['clgrid_over_plain']}, bf16 over fp32 in clgrid "
              f"x{results[name]['bf16_speedup_clgrid']}", flush=True)
    props = torch.cuda.get_device_properties(device)
    result = {
        "benchmark": "gpu_throughput", "mode": "quick" if args.quick else "full", "train": TRAIN,
        "models": results, "wall_s": round(time.perf_counter() - start, 1),
        "peak_bf16_tflops": peak,
        "settings": {"cudnn_benchmark": torch.backends.cudnn.benchmark,
                     "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                     "tf32_cudnn": torch.backends.cudnn.allow_tf32},
        "machine": {**machine(), "gpu": gpu, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                    "compute_capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
