"""Array-form data: the ``Split`` every reader returns, its conversion to N×C×H×W uint8, and ``.npz`` import.

Every reader (torchvision, CUB, ImageFolder, an imported ``.npz``) hands back one
``Split`` per train/test: labels in file order plus either decoded images or a
function that decodes image i on demand. ``finish_split`` then subsamples,
resizes and converts channels the same way for all of them, so two sources of
the same dataset go through one code path.

An imported ``.npz`` holds ``x_train, y_train, x_test, y_test`` and optionally
``classes``. Images may be N×H×W (grey), N×H×W×C or N×C×H×W with C in {1, 3},
uint8, or float in [0, 1] (scaled by 255 and rounded). A split may instead be
stored as JPEG bytes, ``x_<split>_jpeg`` (uint8, 1-D) with ``x_<split>_offsets``
(N+1 byte offsets; image i is ``buf[off[i]:off[i+1]]``), the form of
``cifar10_jpeg.npz``; those images are decoded with PIL only for the samples kept.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

SPLITS = ("train", "test")


@dataclass
class Split:
    """One split as a reader found it: labels in file order and images, decoded or decodable."""

    labels: np.ndarray  # int64, one per sample
    images: np.ndarray | None = None  # N×C×H×W uint8, already in memory
    decode: Callable[[int], "Image.Image"] | None = None  # sample i as a PIL image (variable-size sources)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        """Channels of the source: an image decoded on demand is taken as RGB."""
        return 3 if self.images is None else int(self.images.shape[1])


def first_per_class(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the first ``limit`` samples of each class, in file order (all when ``limit`` is None)."""
    if limit is None:
        return np.arange(len(labels))
    keep = [np.flatnonzero(labels == c)[:limit] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


def resize_center_crop(img: "Image.Image", size: int) -> "Image.Image":
    """Resize the short side to ``size`` (bilinear, antialiased) and crop the centre ``size``×``size``."""
    from PIL import Image

    width, height = img.size
    if (width, height) == (size, size):
        return img
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def _pil_to_chw(img: "Image.Image", size: int | None, channels: int) -> np.ndarray:
    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None:
        img = resize_center_crop(img, size)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def finish_split(split: Split, limit: int | None, size: int | None, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Subsample (first ``limit`` per class), then resize and convert to N×``channels``×size×size uint8.

    ``size`` None keeps the source size; decoded-on-demand images must then all
    have the same size.
    """
    from PIL import Image

    keep = first_per_class(split.labels, limit)
    labels = split.labels[keep].astype(np.int64)
    if split.images is not None:
        x = split.images[keep]
        same_size = size is None or x.shape[2:] == (size, size)
        if same_size and x.shape[1] == channels:
            return np.ascontiguousarray(x), labels
        if same_size and (x.shape[1], channels) == (1, 3):
            return np.repeat(x, 3, axis=1), labels
        mode = "L" if x.shape[1] == 1 else "RGB"
        pil = lambda i: Image.fromarray(x[i, 0] if mode == "L" else x[i].transpose(1, 2, 0), mode)  # noqa: E731
    elif split.decode is not None:
        pil = lambda i: split.decode(int(keep[i]))  # noqa: E731
    else:
        raise ValueError("a split needs images or a decode function")
    if len(keep) == 0:
        height = width = size
        if split.images is not None and size is None:
            height, width = split.images.shape[2:]
        if height is None:
            raise ValueError("an empty split of decoded images needs image_size to know its shape")
        return np.zeros((0, channels, height, width), np.uint8), labels
    first = _pil_to_chw(pil(0), size, channels)
    out = np.empty((len(keep), *first.shape), np.uint8)
    out[0] = first

    def fill(i: int) -> None:
        arr = _pil_to_chw(pil(i), size, channels)
        if arr.shape != first.shape:
            raise ValueError(
                f"images differ in size ({arr.shape[1:]} vs {first.shape[1:]}); set image_size to resize them all"
            )
        out[i] = arr

    # PIL releases the GIL while decoding and resizing, so threads scale; map keeps the order.
    with ThreadPoolExecutor(_threads()) as pool:
        list(pool.map(fill, range(1, len(keep))))
    return out, labels


# --- .npz import ---------------------------------------------------------------------------


class ArrayFileError(ValueError):
    """An imported ``.npz`` lacks an array or holds one of the wrong kind; the message names both."""


def as_nchw_uint8(x: np.ndarray, where: str) -> np.ndarray:
    """N×H×W, N×H×W×C or N×C×H×W (C in {1, 3}), uint8 or float in [0, 1] → N×C×H×W uint8."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        last, second = x.shape[3] in (1, 3), x.shape[1] in (1, 3)
        if last and second and x.shape[1] != x.shape[3]:
            raise ArrayFileError(f"{where}: layout of shape {x.shape} is ambiguous (NHWC or NCHW?); store it as NHWC")
        if last and not second:
            x = x.transpose(0, 3, 1, 2)
        elif not second:
            raise ArrayFileError(
                f"{where}: shape {x.shape} has no channel axis of size 1 or 3 (expected NHW, NHWC or NCHW)"
            )
    else:
        raise ArrayFileError(f"{where}: images must have 3 (NHW) or 4 (NHWC/NCHW) dimensions, got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or np.isnan(x).any()):
            raise ArrayFileError(f"{where}: float images must lie in [0, 1], got [{np.nanmin(x)}, {np.nanmax(x)}]")
        return np.ascontiguousarray(np.rint(x * 255).astype(np.uint8))
    raise ArrayFileError(f"{where}: images must be uint8 or float in [0, 1], got dtype {x.dtype}")


def _jpeg_split(arrays: dict[str, np.ndarray], split: str, where: str) -> Callable[[int], "Image.Image"]:
    buf, offsets = arrays.get(f"x_{split}_jpeg"), arrays.get(f"x_{split}_offsets")
    if offsets is None:
        raise ArrayFileError(f"{where}: has x_{split}_jpeg but no x_{split}_offsets (N+1 byte offsets)")
    if buf.dtype != np.uint8 or buf.ndim != 1:
        raise ArrayFileError(f"{where}: x_{split}_jpeg must be 1-D uint8 bytes, got {buf.dtype} {buf.shape}")
    if offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer) or len(offsets) < 1:
        raise ArrayFileError(f"{where}: x_{split}_offsets must be 1-D integers, got {offsets.dtype} {offsets.shape}")
    if offsets[0] != 0 or offsets[-1] != len(buf) or np.any(np.diff(offsets) <= 0):
        raise ArrayFileError(
            f"{where}: x_{split}_offsets must rise from 0 to len(x_{split}_jpeg) = {len(buf)}, "
            f"got {offsets[0]}..{offsets[-1]}"
        )

    def decode(i: int) -> "Image.Image":
        from PIL import Image

        return Image.open(io.BytesIO(buf[offsets[i] : offsets[i + 1]].tobytes()))

    decode.count = len(offsets) - 1  # type: ignore[attr-defined]
    return decode


def read_npz(
    path: str | os.PathLike, n_classes: int | None = None, name: str | None = None
) -> tuple[Split, Split, list[str]]:
    """Read and check an array file; ``n_classes`` (the registered count for ``name``) must agree with it."""
    from clgrid.io import load_npz

    where = f"array file '{path}'"
    arrays: dict[str, Any] = load_npz(path)
    splits: dict[str, Split] = {}
    for split in SPLITS:
        y = arrays.get(f"y_{split}")
        if y is None:
            raise ArrayFileError(f"{where} lacks y_{split} (has {sorted(arrays)})")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ArrayFileError(f"{where}: y_{split} must be 1-D integer labels, got {y.dtype} with shape {y.shape}")
        if f"x_{split}" in arrays:
            x = arrays[f"x_{split}"]
            if len(x) == 0 and x.ndim not in (3, 4):
                x = None  # an empty split stored as shape (0,): take its image shape from the other split
            else:
                x = as_nchw_uint8(x, f"{where}: x_{split}")
            count = 0 if x is None else len(x)
            splits[split] = Split(y.astype(np.int64), images=x)
        elif f"x_{split}_jpeg" in arrays:
            decode = _jpeg_split(arrays, split, where)
            count = decode.count  # type: ignore[attr-defined]
            splits[split] = Split(y.astype(np.int64), decode=decode)
        else:
            raise ArrayFileError(
                f"{where} lacks x_{split} (or x_{split}_jpeg + x_{split}_offsets); has {sorted(arrays)}"
            )
        if count != len(y):
            raise ArrayFileError(f"{where}: x_{split} has {count} images but y_{split} has {len(y)} labels")
    _fill_empty_shape(splits, where)
    classes = _classes(arrays, splits, n_classes, name, where)
    return splits["train"], splits["test"], classes


def _fill_empty_shape(splits: dict[str, Split], where: str) -> None:
    shapes = {s: sp.images.shape[1:] for s, sp in splits.items() if sp.images is not None}
    for split, sp in splits.items():
        if sp.images is None and sp.decode is None:
            other = shapes.get("test" if split == "train" else "train")
            if other is None:
                raise ArrayFileError(f"{where}: both splits are empty")
            sp.images = np.zeros((0, *other), np.uint8)
    if len(shapes) == 2 and len(splits["train"]) and len(splits["test"]) and shapes["train"] != shapes["test"]:
        raise ArrayFileError(
            f"{where}: train images are {shapes['train']} (C,H,W) but test images are {shapes['test']}"
        )


def _classes(arrays: dict[str, Any], splits: dict[str, Split], n_classes: int | None, name: str | None,
             where: str) -> list[str]:
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise ArrayFileError(f"{where}: classes must be a 1-D string array, got {names.dtype} {names.shape}")
        classes = [str(c) for c in names]
        if n_classes is not None and len(classes) != n_classes:
            raise ArrayFileError(f"{where} has {len(classes)} classes but dataset '{name}' has {n_classes}")
    else:
        top = max((int(sp.labels.max()) for sp in splits.values() if len(sp)), default=-1)
        classes = [str(c) for c in range(n_classes if n_classes is not None else top + 1)]
    for split, sp in splits.items():
        if len(sp) and (sp.labels.min() < 0 or sp.labels.max() >= len(classes)):
            raise ArrayFileError(
                f"{where}: y_{split} must hold labels 0..{len(classes) - 1}, got {sp.labels.min()}..{sp.labels.max()}"
            )
    return classes


# --- CIFAR-10.1: two .npy files, a test split only -------------------------------------------

CIFAR10_1_URL = "https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/"
CIFAR10_1_FILES = ("cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar10_1_present(root: str) -> bool:
    return all((Path(root) / f).is_file() for f in CIFAR10_1_FILES)


def download_cifar10_1(root: str) -> None:
    # The repository publishes no checksums for these files, so none is checked.
    from torchvision.datasets.utils import download_url

    for filename in CIFAR10_1_FILES:
        download_url(CIFAR10_1_URL + filename, root, filename)


def read_cifar10_1(root: str) -> tuple[Split, Split, list[str]]:
    """CIFAR-10.1 v6 (Recht et al. 2018): 2000 test images (N×32×32×3 uint8); the train split is empty."""
    data_path, labels_path = (Path(root) / f for f in CIFAR10_1_FILES)
    if not cifar10_1_present(root):
        raise FileNotFoundError(f"CIFAR-10.1 needs '{data_path}' and '{labels_path}'")
    x = as_nchw_uint8(np.load(data_path, allow_pickle=False), f"'{data_path}'")
    y = np.load(labels_path, allow_pickle=False).astype(np.int64)
    if len(x) != len(y):
        raise ArrayFileError(f"'{data_path}' has {len(x)} images but '{labels_path}' has {len(y)} labels")
    empty = Split(np.zeros(0, np.int64), images=np.zeros((0, *x.shape[1:]), np.uint8))
    return empty, Split(y, images=x), list(CIFAR10_CLASSES)
