"""Datasets read and downloaded through torchvision's own classes, and ImageFolder roots (ImageNet).

Each family names its torchvision class and the constructor arguments that give
the train and test splits. Where torchvision ships a validation split, it is
added to train (DTD, Flowers-102: ``train`` + ``val``; FGVC-Aircraft and
Oxford-IIIT Pet use their official ``trainval``). Where it ships none (EuroSAT,
SUN397, Caltech-101), the whole pool is split 80/20, stratified by class, with
a seed fixed here, so the split belongs to the dataset's definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clgrid.data.arrays import Split

# Datasets without an official test split: fraction held out, seed of sklearn's train_test_split.
POOL_TEST_FRACTION = 0.2
POOL_SPLIT_SEED = 0


@dataclass(frozen=True)
class TorchvisionSet:
    """How to build one dataset's train and test splits from a torchvision class."""

    cls: str  # attribute of torchvision.datasets
    train: tuple[dict[str, Any], ...] = ()  # constructor kwargs per part; parts are concatenated
    test: tuple[dict[str, Any], ...] = ()  # empty train and test: one pool, split 80/20 stratified
    classes: tuple[str, ...] | None = None  # overrides the class's own names
    sort_files: bool = False  # torchvision lists the files in filesystem order (SUN397 uses rglob)
    in_memory: bool = False  # the class holds all images as one array (MNIST, CIFAR)


_TRAIN_TEST = ({"train": True},), ({"train": False},)
_SPLIT = ({"split": "train"},), ({"split": "test"},)
_WITH_VAL = ({"split": "train"}, {"split": "val"}), ({"split": "test"},)
_TRAINVAL = ({"split": "trainval"},), ({"split": "test"},)

SETS: dict[str, TorchvisionSet] = {
    "mnist": TorchvisionSet("MNIST", *_TRAIN_TEST, classes=tuple(str(c) for c in range(10)), in_memory=True),
    "fashion_mnist": TorchvisionSet("FashionMNIST", *_TRAIN_TEST, in_memory=True),
    "cifar10": TorchvisionSet("CIFAR10", *_TRAIN_TEST, in_memory=True),
    "cifar100": TorchvisionSet("CIFAR100", *_TRAIN_TEST, in_memory=True),
    "dtd": TorchvisionSet("DTD", *_WITH_VAL),  # partition 1 of 10
    "flowers102": TorchvisionSet("Flowers102", *_WITH_VAL),
    "eurosat": TorchvisionSet("EuroSAT"),
    "food101": TorchvisionSet("Food101", *_SPLIT),
    "stanford_cars": TorchvisionSet("StanfordCars", *_SPLIT),
    "oxford_pets": TorchvisionSet("OxfordIIITPet", *_TRAINVAL),
    "sun397": TorchvisionSet("SUN397", sort_files=True),
    "caltech101": TorchvisionSet("Caltech101"),
    "fgvc_aircraft": TorchvisionSet("FGVCAircraft", *_TRAINVAL),  # 100 variants
}


def _construct(name: str, root: str, kwargs: dict[str, Any], download: bool):
    import torchvision.datasets

    cls = getattr(torchvision.datasets, SETS[name].cls)
    return cls(str(root), download=download, **kwargs)


def _parts(name: str) -> tuple[dict[str, Any], ...]:
    spec = SETS[name]
    return spec.train + spec.test or ({},)


def present(name: str, root: str) -> bool:
    """Whether torchvision finds every split's files under ``root`` (CIFAR checks md5s here)."""
    try:
        for kwargs in _parts(name):
            _construct(name, root, kwargs, download=False)
    except (RuntimeError, FileNotFoundError, OSError, ValueError):
        return False
    return True


def download(name: str, root: str) -> None:
    """torchvision's own download; one constructor call fetches every split of these datasets."""
    Path(root).mkdir(parents=True, exist_ok=True)
    _construct(name, root, _parts(name)[0], download=True)


def _labels(ds) -> np.ndarray:
    """Labels without decoding an image: each class keeps them under one of these attributes."""
    for attr in ("targets", "_labels", "y"):
        if hasattr(ds, attr):
            labels = getattr(ds, attr)
            return np.asarray(labels.numpy() if hasattr(labels, "numpy") else labels, dtype=np.int64)
    if hasattr(ds, "_samples"):  # StanfordCars
        return np.asarray([target for _, target in ds._samples], dtype=np.int64)
    return np.asarray([ds[i][1] for i in range(len(ds))], dtype=np.int64)


def _class_names(ds) -> list[str]:
    return [str(c) for c in (ds.categories if hasattr(ds, "categories") else ds.classes)]


def _in_memory_images(ds) -> np.ndarray:
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    return data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)  # N×H×W or N×H×W×C


def _pool(datasets: list, order: list[np.ndarray] | None = None) -> Split:
    """Concatenate datasets (e.g. train + val) into one split; ``order`` picks and orders each one's samples."""
    if order is None:
        order = [np.arange(len(ds)) for ds in datasets]
    owner = np.concatenate([np.full(len(o), k) for k, o in enumerate(order)]).astype(np.int64)
    index = np.concatenate(order).astype(np.int64)
    labels = np.concatenate([_labels(ds)[o] for ds, o in zip(datasets, order)]).astype(np.int64)

    def decode(i: int):
        return datasets[owner[i]][int(index[i])][0]

    return Split(labels, decode=decode)


def _file_order(ds, sort_files: bool) -> np.ndarray:
    if not sort_files:
        return np.arange(len(ds))
    return np.argsort([str(p) for p in ds._image_files], kind="stable")


def read(name: str, root: str) -> tuple[Split, Split, list[str]]:
    """The train and test splits of a torchvision dataset whose files are under ``root`` (no download)."""
    spec = SETS[name]
    if not spec.train:
        ds = _construct(name, root, {}, download=False)
        order = _file_order(ds, spec.sort_files)
        labels = _labels(ds)[order]
        train_idx, test_idx = stratified_split(labels)
        classes = list(spec.classes) if spec.classes else _class_names(ds)
        return _pool([ds], [order[train_idx]]), _pool([ds], [order[test_idx]]), classes
    parts = {split: [_construct(name, root, kw, download=False) for kw in kws]
             for split, kws in (("train", spec.train), ("test", spec.test))}
    names = [_class_names(ds) for dss in parts.values() for ds in dss]
    if any(n != names[0] for n in names):
        raise ValueError(
            f"dataset '{name}' under '{root}': the splits list different classes ({[len(n) for n in names]} names); "
            "the split files are incomplete"
        )
    classes = list(spec.classes) if spec.classes else names[0]
    if spec.in_memory:
        (train,), (test,) = parts["train"], parts["test"]
        return (Split(_labels(train), images=_in_memory_images(train)),
                Split(_labels(test), images=_in_memory_images(test)), classes)
    return _pool(parts["train"]), _pool(parts["test"]), classes


def stratified_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices (each sorted, so file order survives): 80/20 stratified, seed fixed."""
    from sklearn.model_selection import train_test_split

    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=POOL_TEST_FRACTION, stratify=labels, random_state=POOL_SPLIT_SEED
    )
    return np.sort(train_idx), np.sort(test_idx)


# --- ImageFolder roots (ImageNet) --------------------------------------------------------------


def read_image_folder(root: str) -> tuple[Split, Split, list[str]]:
    """``root/train/<class>/*`` and ``root/val/<class>/*`` (ImageNet's usual unpacked layout); classes sorted."""
    from torchvision.datasets import ImageFolder

    parts = {}
    for split, folder in (("train", "train"), ("test", "val")):
        path = Path(root) / folder
        if not path.is_dir():
            raise FileNotFoundError(
                f"'{path}' is missing: an ImageFolder root needs train/<class>/*.JPEG and val/<class>/*.JPEG"
            )
        parts[split] = ImageFolder(str(path))
    if parts["train"].classes != parts["test"].classes:
        raise ValueError(
            f"'{root}': train/ has {len(parts['train'].classes)} class folders and val/ has "
            f"{len(parts['test'].classes)}; both need the same class folders (e.g. ImageNet wnids)"
        )
    return _pool([parts["train"]]), _pool([parts["test"]]), list(parts["train"].classes)
