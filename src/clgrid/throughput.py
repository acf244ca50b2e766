"""Training throughput through clgrid's own loop: images/s, FLOPs per image, TFLOP/s and the fraction of the
GPU's dense bf16 peak. ``clgrid doctor`` and ``benchmarks/gpu_throughput.py`` both measure with these functions.

One training step is counted with ``torch.utils.flop_counter.FlopCounterMode`` (forward, loss and backward, so
no 3x-forward rule of thumb is needed); the steps run through ``clgrid.train.fit_task`` with the naive method, SGD
with momentum, data on the device as uint8, so what is timed is what a ``train`` job runs. Warm-up steps (and
``torch.compile``'s compilation) are excluded; a CUDA device is synchronised around the timed steps.
"""

from __future__ import annotations

import re
import time
from typing import Any

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, matched against
# torch.cuda.get_device_name() as whole words (so "A10" does not match "A100" or "A10G"); the first entry that
# matches wins, so the more specific names come first. None: the GPU has no bf16 tensor cores (V100, T4), so no
# fraction is given. GeForce cards (RTX 4090) are listed at their data-sheet rate with fp16 accumulation; with the
# fp32 accumulation torch's bf16 matmuls use they reach half of it.
PEAK_BF16_TFLOPS: list[tuple[str, float | None]] = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.4), ("H200", 989.4), ("H100", 989.4),
    ("H800", 989.4), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.1), ("L40", 181.0),
    ("L4", 121.0), ("A10", 125.0), ("A40", 149.7), ("RTX 4090", 165.2), ("RTX 6000 Ada", 364.2),
    ("RTX A6000", 154.8), ("V100", None), ("T4", None),
]

RESNET18_32PX = {"arch": "resnet18", "input_shape": [3, 32, 32], "n_classes": 100}
TRAIN = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "epochs": 1}

SETTINGS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "bf16": {"precision": "bf16", "channels_last": False},
    "channels_last": {"precision": "bf16", "channels_last": True},
    "compile": {"precision": "bf16", "channels_last": False, "compile": True},
}
"""The doctor's throughput rows: ``train`` overrides of each (channels_last and compile on top of bf16)."""


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name, or None (unknown GPU, or one without bf16 tensor cores)."""
    for name, peak in PEAK_BF16_TFLOPS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", device_name):
            return peak
    return None


def build(backbone: dict[str, Any], input_shape: list[int], n_classes: int, device, seed: int = 0):
    """A randomly initialised clgrid model (``clgrid.models.build_model``) on ``device``."""
    import torch

    from clgrid.models import build_model

    torch.manual_seed(seed)
    return build_model(backbone, input_shape, n_classes).to(device)


def random_batches(input_shape: list[int], n_classes: int, n: int, device, seed: int = 0):
    """``n`` random uint8 images and labels on ``device``, as a dataset sits there in a training job."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *input_shape), dtype=torch.uint8, generator=g)
    return x.to(device), torch.randint(0, n_classes, (n,), generator=g).to(device)


def step_flops(model, x, y) -> int:
    """FLOPs of one training step (forward, cross-entropy, backward) on the batch ``x``, ``y`` (fp32)."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def fit_steps(model, method, x, y, batch: int, steps: int, settings: dict[str, Any]) -> list[float]:
    """``steps`` optimizer steps of clgrid's loop on ``x``, ``y`` with the ``train`` overrides ``settings``."""
    from clgrid.methods import TaskData
    from clgrid.train import fit_task, task_generator

    n_classes = method.n_classes
    return fit_task(model, method, TaskData(0, x[: steps * batch], y[: steps * batch], list(range(n_classes))),
                    {**TRAIN, **settings, "batch_size": batch, "iterations": steps}, task_generator(0, 0))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(settings: dict[str, Any], device, batch: int, steps: int, warmup: int,
            model_cfg: dict[str, Any] = RESNET18_32PX, flops_per_image: float | None = None) -> dict[str, Any]:
    """Images/s of ``steps`` timed training steps after ``warmup`` untimed ones (which include compilation), with
    TFLOP/s and the fraction of the GPU's bf16 peak when ``flops_per_image`` is given.

    The warm-up and the timed steps are two ``fit_task`` calls on the same model and method object, so a compiled
    forward is compiled once (in the warm-up) and reused."""
    import math

    from clgrid.methods import get_method

    backbone = {k: v for k, v in model_cfg.items() if k not in ("input_shape", "n_classes")}
    model = build(backbone, model_cfg["input_shape"], model_cfg["n_classes"], device)
    method = get_method("naive")(model, {}, model_cfg["n_classes"])
    x, y = random_batches(model_cfg["input_shape"], model_cfg["n_classes"], batch * max(steps, warmup), device)
    start = time.perf_counter()
    if warmup:
        fit_steps(model, method, x, y, batch, warmup, settings)
    _sync(device)
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    losses = fit_steps(model, method, x, y, batch, steps, settings)
    _sync(device)
    seconds = time.perf_counter() - start
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(f"non-finite training loss {losses} under {settings}")
    result: dict[str, Any] = {"images_per_s": steps * batch / seconds, "timed_s": seconds, "warmup_s": warm_s,
                              "steps": steps, "batch": batch, "loss": losses[-1] if losses else None}
    if flops_per_image is not None:
        result["tflops"] = flops_per_image * result["images_per_s"] / 1e12
    return result


def flops_per_image(device, batch: int = 8, model_cfg: dict[str, Any] = RESNET18_32PX) -> float:
    """Training FLOPs (forward + backward) per image of ``model_cfg``, counted on a batch of ``batch``."""
    backbone = {k: v for k, v in model_cfg.items() if k not in ("input_shape", "n_classes")}
    model = build(backbone, model_cfg["input_shape"], model_cfg["n_classes"], device)
    x, y = random_batches(model_cfg["input_shape"], model_cfg["n_classes"], batch, device)
    return step_flops(model, x, y) / batch
