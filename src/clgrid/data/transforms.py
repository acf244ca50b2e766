"""Per-benchmark input pipeline: normalisation statistics and training-batch augmentation on the device.

Images stay uint8 on the training device; the model's ``preprocess`` module
scales them to [0, 1] and normalises them (see ``clgrid.models.Net``), so every
consumer of inputs (the loop, buffers, evaluation, analyses) feeds raw images.
Augmentation touches training batches only: it is applied by the loop to the
batch it trains on (and by buffer methods to their draws), never to the
stored data or to a test set.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

# Computing the statistics on more images than this changes them in the third decimal at most.
STATS_SAMPLE = 20000


def normalization(transform_cfg: dict[str, Any], x_train: np.ndarray) -> dict[str, list[float]] | None:
    """Per-channel mean/std in [0, 1] pixel units for the model's ``preprocess``, or None (no normalisation).

    ``auto`` computes them from the training pixels of uint8 images (float datasets such as digits are used as
    they are); ``none`` switches normalisation off; an explicit ``{mean, std}`` is used as given.
    """
    how = (transform_cfg or {}).get("normalize", "auto")
    if how == "none":
        return None
    if isinstance(how, dict):
        return {"mean": [float(m) for m in how["mean"]], "std": [float(s) for s in how["std"]]}
    if x_train.dtype != np.uint8 or not len(x_train):
        return None
    step = max(1, len(x_train) // STATS_SAMPLE)
    pixels = x_train[::step].astype(np.float64) / 255.0
    mean = pixels.mean(axis=(0, 2, 3))
    std = pixels.std(axis=(0, 2, 3))
    return {"mean": [round(float(m), 4) for m in mean], "std": [round(float(max(s, 1e-3)), 4) for s in std]}


def make_augment(transform_cfg: dict[str, Any], generator: "torch.Generator") -> Callable:
    """The benchmark's training augmentation as a function of a batch (N×C×H×W, any dtype, on any device).

    Random numbers come from ``generator`` (a CPU generator), so a task's augmentations are reproducible
    whatever the device. Random crop: zero-pad by ``crop_padding`` on each side and cut a window at a uniform
    offset (torchvision's RandomCrop(padding=p)); flip: mirror left-right with probability 1/2.
    """
    kind = (transform_cfg or {}).get("augment", "none")
    if kind == "none":
        return lambda x: x
    padding = int((transform_cfg or {}).get("crop_padding", 4))
    crop = kind in ("crop", "crop_flip")
    flip = kind in ("flip", "crop_flip")

    def augment(x):
        import torch

        n = len(x)
        if crop and padding:
            x = random_crop(x, padding, torch.randint(0, 2 * padding + 1, (n, 2), generator=generator))
        if flip:
            mirror = torch.rand(n, generator=generator) < 0.5
            x = torch.where(to_device(mirror, x.device)[:, None, None, None], x.flip(-1), x)
        return x

    return augment


def to_device(t, device):
    """A small CPU tensor (random offsets of a batch) on ``device`` without waiting for the GPU.

    A copy from ordinary (pageable) host memory waits until every kernel queued before it has run, so one per
    batch would stall the training loop each step; from pinned memory it is queued like a kernel, and torch keeps
    the pinned buffer alive until the copy is done.
    """
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def random_crop(x, padding: int, offsets):
    """Crop each image of ``x`` from its zero-padded copy at (row, col) = ``offsets[i]``, in one gather."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = to_device(offsets, x.device)
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # N×H
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # N×W
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]
