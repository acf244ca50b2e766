"""Scenarios: a benchmark becomes a list of tasks, each naming its dataset, indices and classes.

A scenario file is plain JSON so a person can read which classes and samples
each task holds. Domain-incremental transforms (a pixel permutation) are stored
with the task, so every job applies exactly the same one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clgrid.data.datasets import get_dataset

SCENARIOS = ("class_incremental", "permuted")


def _class_order(n_classes: int, how: str, rng: np.random.Generator) -> list[int]:
    if how == "sorted":
        return list(range(n_classes))
    if how == "random":
        return [int(c) for c in rng.permutation(n_classes)]
    raise ValueError(f"unknown class_order '{how}'; valid: random, sorted")


def build_scenario(name: str, bench: dict[str, Any], y_train: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Split a dataset into tasks as the benchmark config says; deterministic in ``scenario_seed``."""
    info = get_dataset(bench["dataset"])
    kind = bench["scenario"]
    n_tasks = int(bench["n_tasks"])
    rng = np.random.default_rng(int(bench["scenario_seed"]))
    tasks: list[dict[str, Any]] = []
    if kind == "class_incremental":
        if info.n_classes % n_tasks:
            raise ValueError(
                f"benchmark '{name}': {info.n_classes} classes of '{info.name}' do not split into "
                f"n_tasks={n_tasks} equal tasks; choose n_tasks dividing {info.n_classes}"
            )
        order = _class_order(info.n_classes, bench.get("class_order", "sorted"), rng)
        per_task = info.n_classes // n_tasks
        for t in range(n_tasks):
            classes = order[t * per_task : (t + 1) * per_task]
            tasks.append(
                {
                    "id": t,
                    "dataset": info.name,
                    "classes": classes,
                    "train_idx": np.flatnonzero(np.isin(y_train, classes)).tolist(),
                    "test_idx": np.flatnonzero(np.isin(y_test, classes)).tolist(),
                    "transform": None,
                }
            )
    elif kind == "permuted":
        n_pixels = int(np.prod(info.input_shape))
        for t in range(n_tasks):
            # Task 0 sees the original images, as in Goodfellow et al. 2013 and Kirkpatrick et al. 2017.
            permutation = None if t == 0 else [int(p) for p in rng.permutation(n_pixels)]
            tasks.append(
                {
                    "id": t,
                    "dataset": info.name,
                    "classes": list(range(info.n_classes)),
                    "train_idx": list(range(len(y_train))),
                    "test_idx": list(range(len(y_test))),
                    "transform": None if permutation is None else {"permute_pixels": permutation},
                }
            )
    else:
        raise ValueError(f"benchmark '{name}': unknown scenario '{kind}'; valid: {', '.join(SCENARIOS)}")
    return {
        "name": name,
        "scenario": kind,
        "n_classes": info.n_classes,
        "input_shape": list(info.input_shape),
        "tasks": tasks,
    }


def apply_transform(x: np.ndarray, transform: dict[str, Any] | None) -> np.ndarray:
    """Apply a task's input transform to a batch of images (N×C×H×W)."""
    if not transform:
        return x
    if "permute_pixels" in transform:
        flat = x.reshape(len(x), -1)
        return flat[:, np.asarray(transform["permute_pixels"])].reshape(x.shape)
    raise ValueError(f"unknown transform {sorted(transform)}; valid: permute_pixels")


def task_arrays(dataset: dict[str, np.ndarray], task: dict[str, Any], split: str) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and labels of one task's train or test split, transformed."""
    idx = np.asarray(task[f"{split}_idx"], dtype=np.int64)
    x = apply_transform(dataset[f"x_{split}"][idx], task.get("transform"))
    return np.ascontiguousarray(x, dtype=np.float32), dataset[f"y_{split}"][idx]
