"""Scenarios: a benchmark becomes a list of tasks, each naming its dataset, indices, classes and transform.

A scenario file is plain JSON so a person can read which classes and samples
each task holds. Everything random about a scenario (class order, pixel
permutations, rotation angles) is drawn here, once, from ``scenario_seed`` and
stored with the task, so every job applies exactly the same one.

Kinds (``scenario`` in a benchmark):

- ``class_incremental``: disjoint groups of classes, one head over every class.
  Every evaluation records class-IL accuracy (argmax over all classes) and
  task-IL accuracy (argmax over the evaluated task's classes), as the DER paper
  reports both from one run.
- ``task_incremental``: the same splits and training; its headline metric is
  the task-IL accuracy (evaluation masks the logits to the task's classes).
- ``permuted`` / ``rotated``: domain-incremental; every task holds every class,
  inputs transformed by a fixed pixel permutation / rotation per task (task 0
  sees the original images).
- ``dataset_sequence``: each task is its own dataset (MNIST → Fashion-MNIST; the
  11-dataset MTIL order). ``label_space: disjoint`` gives each dataset its own
  block of labels in one head (class names kept, for zero-shot heads);
  ``shared`` maps label k of every dataset to output k.

Options: ``holdout_classes: k`` keeps the last k classes of the class order out
of every training split and evaluates them separately (``unseen``);
``eval_sets`` attaches evaluation-only test sets (a shifted test set such as
CIFAR-10.1) split by the same classes and transforms as the tasks;
``validation: {fraction: f}`` sets aside, per class, ``round(f * n)`` (at least
1) of each task's ``n`` training samples as its validation split (``val_idx``,
never in ``train_idx``), drawn once per dataset from a generator of its own
(``validation_split``), so every other draw is the same with or without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SCENARIOS = ("class_incremental", "task_incremental", "permuted", "rotated", "dataset_sequence")
CLASS_SPLIT = ("class_incremental", "task_incremental")
DOMAIN = ("permuted", "rotated")


def _class_order(n_classes: int, how: str | list[int], rng: np.random.Generator) -> list[int]:
    if isinstance(how, list):
        if sorted(how) != list(range(n_classes)):
            raise ValueError(f"class_order {how} is not a permutation of the {n_classes} classes 0..{n_classes - 1}")
        return [int(c) for c in how]
    if how == "sorted":
        return list(range(n_classes))
    if how == "random":
        return [int(c) for c in rng.permutation(n_classes)]
    raise ValueError(f"unknown class_order '{how}'; valid: random, sorted, or a list of class ids")


def _indices(labels: np.ndarray, classes: list[int]) -> list[int]:
    return np.flatnonzero(np.isin(labels, classes)).tolist()


def _shape(data: dict[str, np.ndarray]) -> list[int]:
    x = data["x_train"] if len(data["x_train"]) else data["x_test"]
    return [int(s) for s in x.shape[1:]]


def input_shape_of(bench: dict[str, Any], shapes: dict[str, list[int]]) -> list[int]:
    """The one input shape of a benchmark: ``channels``/``image_size`` when set, else its datasets' common shape."""
    names = list(shapes)
    first = shapes[names[0]]
    channels = bench.get("channels") or first[0]
    size = bench.get("image_size")
    if size:
        return [int(channels), int(size), int(size)]
    differ = {n: s for n, s in shapes.items() if s[1:] != first[1:] or (not bench.get("channels") and s[0] != first[0])}
    if differ:
        raise ValueError(
            f"the datasets of this benchmark have different input shapes {shapes}; set image_size (and channels) "
            "in the benchmark so every task is resized to one shape"
        )
    return [int(channels), *first[1:]]


def build_scenario(name: str, bench: dict[str, Any], datasets: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Split datasets into tasks as the benchmark config says; deterministic in ``scenario_seed``.

    ``datasets`` maps each dataset name the benchmark uses to its prepared arrays
    (``y_train``, ``y_test``, ``classes`` and the image arrays, whose shapes fix the input shape).
    """
    kind = bench["scenario"]
    if kind not in SCENARIOS:
        raise ValueError(f"benchmark '{name}': unknown scenario '{kind}'; valid: {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(int(bench.get("scenario_seed", 0)))
    sequence = bench["datasets"] if kind == "dataset_sequence" else [bench["dataset"]]
    shapes = {d: _shape(datasets[d]) for d in sequence}
    tasks: list[dict[str, Any]] = []
    holdout = None
    class_names: list[str] = []

    if kind == "dataset_sequence":
        shared = bench.get("label_space", "disjoint") == "shared"
        offset = 0
        for t, dname in enumerate(sequence):
            data = datasets[dname]
            k = len(data["classes"])
            label_offset = 0 if shared else offset
            tasks.append({
                "id": t, "dataset": dname, "label_offset": label_offset,
                "classes": [label_offset + c for c in range(k)],
                "class_names": [str(c) for c in data["classes"]],
                "train_idx": None, "test_idx": None, "transform": None,
            })
            if not shared:
                offset += k
                class_names += [str(c) for c in data["classes"]]
        n_classes = max(len(datasets[d]["classes"]) for d in sequence) if shared else offset
        if shared:
            class_names = [str(c) for c in datasets[sequence[0]]["classes"]][:n_classes]
    else:
        dname = sequence[0]
        data = datasets[dname]
        n_classes = len(data["classes"])
        class_names = [str(c) for c in data["classes"]]
        n_tasks = int(bench["n_tasks"])
        n_holdout = int(bench.get("holdout_classes", 0))
        if kind in CLASS_SPLIT:
            order = _class_order(n_classes, bench.get("class_order", "sorted"), rng)
            trained, held = order[: n_classes - n_holdout], order[n_classes - n_holdout :]
            if len(trained) % n_tasks:
                raise ValueError(
                    f"benchmark '{name}': {len(trained)} trained classes of '{dname}' do not split into "
                    f"n_tasks={n_tasks} equal tasks"
                )
            per_task = len(trained) // n_tasks
            for t in range(n_tasks):
                classes = trained[t * per_task : (t + 1) * per_task]
                tasks.append({
                    "id": t, "dataset": dname, "label_offset": 0, "classes": classes,
                    "train_idx": _indices(data["y_train"], classes), "test_idx": _indices(data["y_test"], classes),
                    "transform": None,
                })
        else:
            order = _class_order(n_classes, bench.get("class_order", "sorted"), rng)
            trained, held = order[: n_classes - n_holdout], order[n_classes - n_holdout :]
            angles = _rotation_angles(bench, n_tasks, rng) if kind == "rotated" else None
            n_pixels = int(np.prod(input_shape_of(bench, shapes)[1:]))
            for t in range(n_tasks):
                if kind == "permuted":
                    # Task 0 sees the original images, as in Goodfellow et al. 2013 and Kirkpatrick et al. 2017.
                    transform = None if t == 0 else {"permute_pixels": [int(p) for p in rng.permutation(n_pixels)]}
                else:
                    transform = None if angles[t] == 0 else {"rotate_degrees": angles[t]}
                tasks.append({
                    "id": t, "dataset": dname, "label_offset": 0, "classes": sorted(trained),
                    "train_idx": None if not held else _indices(data["y_train"], trained),
                    "test_idx": None if not held else _indices(data["y_test"], trained),
                    "transform": transform,
                })
        if held:
            # train_idx: the unseen classes' training images, never trained on; retrieval adds their embeddings to
            # the index at evaluation (adding classes without retraining).
            holdout = {"dataset": dname, "label_offset": 0, "classes": sorted(held),
                       "train_idx": _indices(data["y_train"], held), "test_idx": _indices(data["y_test"], held),
                       "transform": None}

    eval_sets = {}
    for set_name, set_cfg in (bench.get("eval_sets") or {}).items():
        data = datasets[set_cfg["dataset"]]
        # Split like the tasks: the same classes (labels in the base dataset's label space) and transforms.
        eval_sets[set_name] = {
            "dataset": set_cfg["dataset"],
            "tasks": [
                {"test_idx": _indices(data["y_test"], [c - task["label_offset"] for c in task["classes"]]),
                 "label_offset": task["label_offset"], "transform": task["transform"]}
                for task in tasks
            ],
        }

    scenario = {
        "name": name,
        "scenario": kind,
        "headline": "task_il" if kind == "task_incremental" else "class_il",
        "n_classes": int(n_classes),
        "class_names": class_names,
        "input_shape": input_shape_of(bench, shapes),
        "tasks": tasks,
        "holdout": holdout,
        "eval_sets": eval_sets,
    }
    if bench.get("validation"):
        _set_aside_validation(name, bench, tasks, datasets)
        scenario["validation"] = {"fraction": bench["validation"]["fraction"]}
    return scenario


def validation_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the samples set aside for validation: per class (in label order), ``round(fraction * n)``
    of its ``n`` samples, at least 1, drawn without replacement with ``rng``."""
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = max(1, round(fraction * len(members)))
        chosen.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _set_aside_validation(name: str, bench: dict[str, Any], tasks: list[dict[str, Any]],
                          datasets: dict[str, dict[str, np.ndarray]]) -> None:
    """Give every task a ``val_idx`` and remove it from its ``train_idx`` (explicit for every task then).

    One draw per dataset, from ``[scenario_seed, 1]`` (a generator of its own: the class order, permutations and
    angles are drawn as before), in the order the tasks first use the datasets: the tasks of a permuted or rotated
    benchmark share it, so an image set aside is set aside in every task.
    """
    fraction = float(bench["validation"]["fraction"])
    rng = np.random.default_rng([int(bench.get("scenario_seed", 0)), 1])
    drawn = {d: validation_split(datasets[d]["y_train"], fraction, rng)
             for d in dict.fromkeys(t["dataset"] for t in tasks)}
    for task in tasks:
        labels = datasets[task["dataset"]]["y_train"]
        own = np.arange(len(labels)) if task["train_idx"] is None else np.asarray(task["train_idx"], dtype=np.int64)
        held = np.isin(own, drawn[task["dataset"]])
        train, val = own[~held], own[held]
        for c in task["classes"]:
            local = c - task["label_offset"]
            if np.any(labels[own] == local) and not np.any(labels[train] == local):
                raise ValueError(
                    f"benchmark '{name}': validation.fraction {fraction} sets aside every training sample of class "
                    f"{local} of '{task['dataset']}' (task {task['id']}, {int(np.sum(labels[own] == local))} "
                    f"sample(s)): lower benchmarks.{name}.validation.fraction or use a dataset with more samples "
                    "per class"
                )
        task["train_idx"], task["val_idx"] = train.tolist(), val.tolist()


def _rotation_angles(bench: dict[str, Any], n_tasks: int, rng: np.random.Generator) -> list[float]:
    """Given ``angles`` or, by default, task 0 upright and the others uniform in [0, max_angle) (GEM's rotated MNIST)."""
    if bench.get("angles"):
        angles = [float(a) for a in bench["angles"]]
        if len(angles) != n_tasks:
            raise ValueError(f"rotated: {len(angles)} angles given for n_tasks = {n_tasks}")
        return angles
    max_angle = float(bench.get("max_angle", 180.0))
    return [0.0] + [round(float(a), 4) for a in rng.uniform(0.0, max_angle, size=n_tasks - 1)]


def apply_transform(x: np.ndarray, transform: dict[str, Any] | None) -> np.ndarray:
    """Apply a task's input transform to a batch of images (N×C×H×W), the same for train and test splits."""
    if not transform:
        return x
    if "permute_pixels" in transform:
        flat = x.reshape(len(x), x.shape[1], -1)
        return flat[:, :, np.asarray(transform["permute_pixels"])].reshape(x.shape)
    if "rotate_degrees" in transform:
        return rotate(x, float(transform["rotate_degrees"]))
    raise ValueError(f"unknown transform {sorted(transform)}; valid: permute_pixels, rotate_degrees")


def rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate every image by ``degrees`` (counter-clockwise, bilinear, zero fill) with torchvision."""
    import torch
    from torchvision.transforms.v2 import functional as TF
    from torchvision.transforms.v2 import InterpolationMode

    out = TF.rotate(torch.from_numpy(np.ascontiguousarray(x)), degrees, interpolation=InterpolationMode.BILINEAR)
    return out.numpy()


def conform(x: np.ndarray, shape: list[int]) -> np.ndarray:
    """Resize (bilinear, antialiased) and convert grey↔RGB so images of any dataset match the benchmark's shape."""
    channels, height, width = shape
    if x.shape[1] != channels:
        if x.shape[1] == 1 and channels == 3:
            x = np.repeat(x, 3, axis=1)
        elif x.shape[1] == 3 and channels == 1:
            weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[None, :, None, None]
            grey = (x.astype(np.float32) * weights).sum(1, keepdims=True)
            x = np.round(grey).astype(x.dtype) if x.dtype == np.uint8 else grey.astype(x.dtype)
        else:
            raise ValueError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")
    if list(x.shape[2:]) != [height, width] and len(x):
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(x)).float()
        t = F.interpolate(t, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        x = t.round().clamp(0, 255).to(torch.uint8).numpy() if x.dtype == np.uint8 else t.numpy().astype(x.dtype)
    return x


def select(arrays: dict[str, np.ndarray], split: str, idx: list[int] | None, label_offset: int,
           transform: dict[str, Any] | None, shape: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One split's inputs (conformed to ``shape``, transformed) and global labels, for the given sample indices."""
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    if idx is not None:
        take = np.asarray(idx, dtype=np.int64)
        x, y = x[take], y[take]
    x = apply_transform(conform(x, shape), transform)
    return np.ascontiguousarray(x), (y + label_offset).astype(np.int64)


def task_arrays(datasets: dict[str, dict[str, np.ndarray]], scenario: dict[str, Any], task_id: int,
                split: str) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and global labels of one task's train, test or validation split, transformed (the validation
    split: the training samples at its ``val_idx``)."""
    task = scenario["tasks"][task_id]
    if split == "validation":
        if "val_idx" not in task:
            raise ValueError(f"scenario '{scenario['name']}' sets no validation split aside: add validation: "
                             f"{{fraction: 0.1}} to benchmarks.{scenario['name']} (its scenario is then rebuilt)")
        return select(datasets[task["dataset"]], "train", task["val_idx"], task["label_offset"], task["transform"],
                      scenario["input_shape"])
    return select(datasets[task["dataset"]], split, task[f"{split}_idx"], task["label_offset"], task["transform"],
                  scenario["input_shape"])


def input_normalization(scenario: dict[str, Any], bench: dict[str, Any],
                        datasets: dict[str, dict[str, np.ndarray]]) -> dict[str, list[float]]:
    """Normalisation statistics of the training pixels the tasks use (each dataset once, up to ~5000 images of
    it), fixed when the scenario is written so every job applies the same."""
    from clgrid.data.transforms import normalization

    trained = dict.fromkeys(t["dataset"] for t in scenario["tasks"])  # each dataset once, in task order
    samples = [conform(datasets[d]["x_train"][:: max(1, len(datasets[d]["x_train"]) // 5000)], scenario["input_shape"])
               for d in trained if len(datasets[d]["x_train"])]
    pixels = np.concatenate(samples) if samples else np.zeros((0, *scenario["input_shape"]), np.uint8)
    return normalization(bench.get("transform", {}), pixels)
