"""Frozen-feature cache: a frozen backbone's features computed once, every method and seed trains its head on them.

A frozen backbone with a trainable head is the most common pretrained-CL baseline, and recomputing the backbone for
every method, seed, epoch and evaluation is the largest waste in such grids. The ``extract_features`` job runs the
backbone once over every task's train and test split (and the held-out and evaluation-only sets); a training job
of a frozen run then swaps the model's ``preprocess`` and ``backbone`` for identities (``head_only``) and trains
on the cached features. Every method sees a ``Net`` whose ``features(x)`` is ``x`` and whose ``forward`` is the
head, so replay buffers hold features, EWC's Fisher covers the head, distillation compares heads: what each method
does with a frozen backbone anyway. The checkpoint written afterwards is the whole model, as without the cache.

The cache records a digest of the backbone weights it was computed from; a job whose (frozen) backbone holds other
weights refuses it rather than train on features of another network.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Callable, Iterator

import torch
from torch import nn


def state_digest(module: nn.Module) -> str:
    """sha256 over a module's state (names, dtypes, shapes and bytes, in key order): equal iff the weights are."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def extract(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
            autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> torch.Tensor:
    """``model.features`` of every input, in eval mode and in batches, as float32 on the CPU.

    ``autocast``: the runs' precision (``clgrid.device.Precision.autocast``), so a cached feature is the number an
    uncached run's backbone computes under its autocast (a bf16 feature, widened to fp32 for the file)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with autocast():
        parts = [model.features(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    if not parts:
        return torch.zeros((0, getattr(model, "feature_dim", 0)), dtype=torch.float32)
    return torch.cat(parts)


@contextlib.contextmanager
def head_only(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model maps cached features to logits: ``preprocess`` and ``backbone`` are identities.

    The real modules are put back on exit (also after an error), so the saved checkpoint has every key.
    """
    preprocess, backbone = model.preprocess, model.backbone
    model.preprocess, model.backbone = nn.Identity(), nn.Identity()
    try:
        yield model
    finally:
        model.preprocess, model.backbone = preprocess, backbone


class BackboneCounter:
    """Counts the samples that go through a backbone (a forward pre-hook): the compute the cache saves."""

    def __init__(self, backbone: nn.Module):
        self.samples = 0
        self.calls = 0
        self._handle = backbone.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, args) -> None:
        # Not inside a compiled forward (train.compile): Dynamo would guard on the counter, recompiling at every
        # step until its recompile limit and then running the job uncompiled. Those samples go uncounted (the
        # count is a log line, not a result); torch.compiler.disable would import torch._dynamo in every job.
        if torch.compiler.is_compiling():
            return
        self.calls += 1
        self.samples += int(args[0].shape[0]) if args and hasattr(args[0], "shape") else 0

    def remove(self) -> None:
        self._handle.remove()


def extract_all(model: nn.Module, ctx) -> tuple[dict, int]:
    """The frozen backbone's features of every split a job of ``ctx`` (a ``clgrid.context.JobContext``) reads:
    each task's train and test split (and validation split, where the benchmark sets one aside), the held-out
    classes (test and train) and each evaluation-only set, under the runs' precision; with the number of samples
    that went through the backbone."""
    def features(x):
        return extract(model, x, autocast=ctx.precision.autocast)

    n_tasks = len(ctx.scenario["tasks"])
    cache: dict = {split: [features(ctx.task_data(i, split).x) for i in range(n_tasks)] for split in ("train", "test")}
    sets = ctx.test_sets()
    cache["unseen"] = features(sets["unseen"][0][0]) if "unseen" in sets else None
    cache["unseen_train"] = features(ctx.unseen_train()[0]) if "unseen" in sets else None
    cache["sets"] = {key[4:]: [features(x) for x, _, _ in parts] for key, parts in sets.items()
                     if key.startswith("set:")}
    held = [cache[key] for key in ("unseen", "unseen_train") if cache[key] is not None]  # tensors: no `or []`
    samples = sum(len(f) for split in ("train", "test") for f in cache[split]) + sum(len(f) for f in held) + \
        sum(len(f) for parts in cache["sets"].values() for f in parts)
    if ctx.has_validation:  # a benchmark with validation splits (absent otherwise: older caches keep their bytes)
        cache["validation"] = [features(x) for x, _, _ in ctx.validation_sets()]
        samples += sum(len(f) for f in cache["validation"])
    return cache, samples
