"""Dataset registry: a name maps to how its raw files are downloaded and how they become one ``.npz``.

A prepared file has ``x_train, y_train, x_test, y_test`` (images N×C×H×W uint8,
labels int64) and ``classes`` (names in label order); ``digits`` alone keeps its
historical float32 pixels in [0, 1]. A sidecar JSON beside it (``mnist.npz`` →
``mnist.json``) records the source, the file's sha256, shapes, per-class counts
and the options used. Jobs read the ``.npz`` with numpy, so a training job never
imports the library that made the data.

Options (``prepare_dataset(name, out, options, raw_dir)``; absent or None = default):

- ``npz``: import this array file instead of the raw files (see ``clgrid.data.arrays``); ``raw_dir`` is unused.
- ``path``: read the raw files from this folder instead of ``raw_dir``, in the same layout; ImageNet needs it
  (an ImageFolder root with ``train/<wnid>/`` and ``val/<wnid>/``).
- ``image_size``: side of the square images written: short side resized (bilinear), then centre crop.
  Defaults to the dataset's ``default_image_size``; fixed-size datasets keep their size unless it is set.
- ``channels``: 1 or 3; grey is replicated to RGB, RGB becomes grey by PIL's ITU-R 601-2 luma.
  Defaults to the source's (1 for MNIST-like, 3 otherwise).
- ``max_per_class_train`` / ``max_per_class_test``: keep the first N samples of each class, in file order.
- ``n_classes``: for a name that is not registered, imported with ``npz``: its class count (a registered
  name's count is fixed; giving a different one is an error).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from clgrid.data.registry import (  # noqa: F401 - the registry's names, also importable from here
    ARRAYS,
    DATASETS,
    FAMILIES,
    OPTIONS,
    SHARED_SPLIT,
    DatasetInfo,
    get_dataset,
)
from clgrid.io import file_sha256, save_npz, write_json


# --- digits: unchanged since the first release, so its arrays stay byte-for-byte the same ----------

FLOAT_PIXELS = ("digits",)
"""Datasets whose prepared images are float32 (4 bytes a value; every other dataset's are uint8)."""


def pixel_bytes(name: str) -> int:
    """Bytes of one image value in ``name``'s prepared file (and so in a buffer that stores its images)."""
    return 4 if name in FLOAT_PIXELS else 1


def prepare_digits(out_path: str) -> None:
    """scikit-learn's 8×8 digits (ships with the package, no download): stratified 75/25 split, pixels / 16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    # The split seed belongs to the dataset's definition, not to any experiment seed.
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=0
    )
    save_npz(
        out_path,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=np.array([str(c) for c in range(10)]),
    )



# --- download ------------------------------------------------------------------------------------


def _probe(url: str, timeout: float) -> str | None:
    """None when ``url``'s host accepts a TCP connection within ``timeout`` s, else why not.

    Runs in a thread because name resolution ignores socket timeouts.
    """
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            result.append(None)
        except OSError as err:
            result.append(f"{type(err).__name__}: {err}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else f"no answer from {parsed.hostname}:{port} within {timeout:g} s"


def _download_failed(info: DatasetInfo, raw_dir: str, reason: str) -> RuntimeError:
    by_hand = f"Place the files by hand under '{raw_dir}' as {info.layout}, then rerun.\n" if info.read_fn else ""
    return RuntimeError(
        f"cannot download dataset '{info.name}' from {info.url or '(no URL)'}: {reason}.\n"
        f"{by_hand}"
        f"Or import arrays instead: set `datasets: {{{info.name}: {{npz: path/to/file.npz}}}}` in the config "
        "(an .npz with x_train, y_train, x_test, y_test and optionally classes)."
    )


def download_dataset(name: str, raw_dir: str, timeout: float = 10.0) -> None:
    """Fetch a dataset's raw files into ``raw_dir``; offline it fails within ``timeout`` s, saying what goes where."""
    info = get_dataset(name)
    if info.family == "sklearn":
        return  # ships with scikit-learn
    if info.present_fn is not None and info.present_fn(raw_dir):
        return
    if info.download_fn is None or info.no_download:
        raise _download_failed(info, raw_dir, info.no_download or "no download is known")
    unreachable = _probe(info.url, timeout)
    if unreachable:
        raise _download_failed(info, raw_dir, f"host unreachable ({unreachable})")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # torchvision's urlopen calls take no timeout of their own
    try:
        Path(raw_dir).mkdir(parents=True, exist_ok=True)
        info.download_fn(raw_dir)
    except Exception as err:  # noqa: BLE001 - any failure gets the same advice
        raise _download_failed(info, raw_dir, f"{type(err).__name__}: {err}") from None
    finally:
        socket.setdefaulttimeout(previous)
    if info.present_fn is not None and not info.present_fn(raw_dir):
        raise _download_failed(info, raw_dir, "the download finished but the files are not where expected")


# --- prepare -------------------------------------------------------------------------------------


def _check_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for dataset '{name}'; valid: {', '.join(OPTIONS)}")
    for key in ("image_size", "max_per_class_train", "max_per_class_test", "n_classes"):
        if key in opts and (isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 1):
            raise ValueError(f"datasets.{name}.{key} must be a positive integer, got {opts[key]!r}")
    if "channels" in opts and opts["channels"] not in (1, 3):
        raise ValueError(f"datasets.{name}.channels must be 1 or 3, got {opts['channels']!r}")
    if "npz" in opts and "path" in opts:
        raise ValueError(f"datasets.{name}: set either npz (array import) or path (raw folder), not both")
    if name == "digits" and opts:
        raise ValueError(f"dataset 'digits' takes no options (got {sorted(opts)}); it is fixed by scikit-learn")
    return {k: str(v) if isinstance(v, os.PathLike) else v for k, v in opts.items()}


def _read(info: DatasetInfo, opts: dict[str, Any], raw_dir: str | None):
    if "npz" in opts:
        from clgrid.data.arrays import read_npz

        return read_npz(opts["npz"], n_classes=info.n_classes, name=info.name), f"array file {opts['npz']}"
    root = opts.get("path") or raw_dir
    if info.read_fn is None or root is None:
        hint = info.no_download or f"set datasets.{info.name}.path to its raw folder ({info.layout})"
        raise ValueError(f"dataset '{info.name}' has nothing to read: {hint}")
    try:
        train, test, classes = info.read_fn(root)
    except (RuntimeError, FileNotFoundError) as err:
        raise FileNotFoundError(
            f"dataset '{info.name}': raw files not found or incomplete under '{root}' ({err}); expected "
            f"{info.layout}. Run the download rule, place them there by hand (or set datasets.{info.name}.path to "
            f"a folder holding them), or import arrays with "
            f"`datasets: {{{info.name}: {{npz: path/to/file.npz}}}}`"
        ) from err
    if len(classes) != info.n_classes:
        raise ValueError(
            f"dataset '{info.name}' under '{root}' has {len(classes)} classes, expected {info.n_classes}; "
            "the raw folder is incomplete or holds another dataset"
        )
    return (train, test, classes), f"raw folder {root}"


def _info_for(name: str, opts: dict[str, Any]) -> DatasetInfo:
    """The registry entry, or for an unregistered name imported with npz and n_classes, one made for it."""
    if name in DATASETS:
        info = DATASETS[name]
        if opts.get("n_classes", info.n_classes) != info.n_classes:
            raise ValueError(f"datasets.{name}.n_classes = {opts['n_classes']}, but '{name}' has {info.n_classes} "
                             "classes; leave n_classes out for a registered dataset")
        return info
    if "npz" not in opts or "n_classes" not in opts:
        raise KeyError(f"unknown dataset '{name}'; valid: {', '.join(sorted(DATASETS))}, or import your own arrays "
                       f"with datasets: {{{name}: {{npz: path/to/file.npz, n_classes: K}}}}")
    return DatasetInfo(name, int(opts["n_classes"]), None, f"imported arrays {opts['npz']}", "", "arrays", None,
                       split="as in the imported file")


def prepare_dataset(name: str, out: str, options: dict[str, Any] | None = None,
                    raw_dir: str | None = None) -> dict[str, Any]:
    """Write ``out`` (one ``.npz``) and its sidecar ``.json`` from raw files or an array file; return the metadata."""
    from clgrid.data.arrays import finish_split
    from clgrid.io import load_npz

    opts = _check_options(name, options)
    info = _info_for(name, opts)
    if name == "digits":
        prepare_digits(out)
        arrays, origin = load_npz(out, ARRAYS), "scikit-learn"
    else:
        (train, test, classes), origin = _read(info, opts, raw_dir)
        size = opts.get("image_size") or info.default_image_size
        channels = opts.get("channels") or (train.channels if len(train) else test.channels)
        x_train, y_train = finish_split(train, opts.get("max_per_class_train"), size, channels)
        x_test, y_test = finish_split(test, opts.get("max_per_class_test"), size, channels)
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
                  "classes": np.array(classes)}
        save_npz(out, **arrays)
    return _write_sidecar(info, out, arrays, opts, origin)


def sidecar_path(out: str | os.PathLike) -> Path:
    """Where the metadata of a prepared file goes: ``results/data/mnist.npz`` → ``results/data/mnist.json``."""
    return Path(out).with_suffix(".json")


def _write_sidecar(info: DatasetInfo, out: str, arrays: dict[str, np.ndarray], opts: dict[str, Any],
                   origin: str) -> dict[str, Any]:
    n_classes = len(arrays["classes"])
    meta = {
        "name": info.name,
        "source": info.source,
        "url": info.url,
        "family": info.family,
        "read_from": origin,
        "split": "as in the imported file" if "npz" in opts else info.split,
        "file": Path(out).name,
        "sha256": file_sha256(out),
        "shapes": {k: list(arrays[k].shape) for k in ARRAYS},
        "dtype": str(arrays["x_train"].dtype),
        "n_classes": n_classes,
        "classes": [str(c) for c in arrays["classes"]],
        "counts": {
            split: np.bincount(arrays[f"y_{split}"], minlength=n_classes).tolist() for split in ("train", "test")
        },
        "options": opts,
    }
    write_json(sidecar_path(out), meta)
    return meta
