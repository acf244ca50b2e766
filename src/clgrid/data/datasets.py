"""Dataset registry: a name maps to a preparer that writes one ``.npz`` of float arrays.

Every prepared file has ``x_train, y_train, x_test, y_test`` (images N×C×H×W in
[0, 1], labels int64) and ``classes`` (names). Jobs read that file with numpy, so
a training job never imports the library that made the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from clgrid.io import save_npz

ARRAYS = ("x_train", "y_train", "x_test", "y_test", "classes")


@dataclass(frozen=True)
class DatasetInfo:
    """What the DAG must know about a dataset before it is prepared."""

    name: str
    n_classes: int
    input_shape: tuple[int, ...]
    prepare: Callable[[str], None]
    source: str


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


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        n_classes=10,
        input_shape=(1, 8, 8),
        prepare=prepare_digits,
        source="sklearn.datasets.load_digits (UCI optical digits test set, 1797 images)",
    ),
}


def get_dataset(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}'; valid: {', '.join(sorted(DATASETS))}") from None
