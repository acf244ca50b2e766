"""Plan-time checks of datasets: each is registered or imported with its class count, its options are ones
``clgrid.data.datasets.prepare_dataset`` takes, the files and folders it is read from exist and hold what a job
reads, and what a task trains on has training images."""

from __future__ import annotations

import os
from typing import Any

from clgrid import paths
from clgrid.config.errors import ConfigError, choices, did_you_mean
from clgrid.config.grid import dataset_classes, datasets_of, method_datasets, method_of
from clgrid.config.sweeps import _param_path
from clgrid.data.datasets import DATASETS


PREPARED_DATASET = paths.DATASET
"""Where the DAG writes a prepared dataset: once it exists, its raw folder is not needed."""


def check_dataset_names(config: dict[str, Any]) -> None:
    """Each dataset under ``datasets`` is registered, or imported from arrays with its class count."""
    for name, options in config.get("datasets", {}).items():
        if name not in DATASETS and "npz" not in options:
            raise ConfigError(
                f"'{name}' is not a registered dataset{did_you_mean(name, DATASETS)}, and it names no npz to import",
                path=("datasets", name), value=options, allowed="a registered dataset (" + choices(sorted(DATASETS))
                + "), or an imported one: {npz: path/to/file.npz, n_classes: K}",
                fix=f"correct the name, or add npz: <file> and n_classes: <K> under datasets.{name}")
        if name not in DATASETS and "n_classes" not in options:
            raise ConfigError("an imported dataset that is not registered needs its class count",
                              path=("datasets", name, "n_classes"), allowed="an integer >= 2", kind="missing",
                              fix=f"add n_classes: <K> under datasets.{name}")


def check_datasets(config: dict[str, Any]) -> None:
    """Options ``clgrid.data.datasets.prepare_dataset`` refuses (``_check_options``, ``_info_for``, ``_read``)."""
    for name, options in (config.get("datasets") or {}).items():
        where = ("datasets", name)
        set_options = {k: v for k, v in options.items() if v is not None}
        if name == "digits" and set_options:
            key = next(iter(set_options))
            raise ConfigError("digits takes no options: scikit-learn fixes its 8x8 images and its split",
                              path=(*where, key), value=set_options[key], describe_as=("datasets",),
                              allowed="no options (remove datasets.digits)",
                              fix="remove datasets.digits; to import other arrays, give them another name with npz "
                                  "and n_classes")
        if "npz" in set_options and "path" in set_options:
            raise ConfigError("npz (import arrays) and path (read a raw folder) are two sources; the preparation "
                              "takes one", path=(*where, "path"), value=options["path"],
                              allowed="npz or path, not both", fix=f"remove one of datasets.{name}.npz and .path")
        info = DATASETS.get(name)
        if info is not None and "n_classes" in set_options and set_options["n_classes"] != info.n_classes:
            raise ConfigError(f"'{name}' is registered with {info.n_classes} classes", path=(*where, "n_classes"),
                              value=options["n_classes"], allowed=f"{info.n_classes}, or leave n_classes out",
                              fix="remove n_classes (it is for datasets imported under a new name)")
        if info is not None and "path" in set_options and info.read_fn is None and name != "digits":
            raise ConfigError(f"'{name}' has no reader for a raw folder: {info.no_download or 'use npz'}",
                              path=(*where, "path"), value=options["path"], allowed="npz: <array file>",
                              fix=f"replace path with npz: path/to/{name}.npz")


def dataset_shape(config: dict[str, Any], name: str) -> list[int] | None:
    """C, H, W of a prepared dataset as the preparation makes it, where known before (None for imported arrays)."""
    info = DATASETS.get(name)
    options = (config.get("datasets") or {}).get(name) or {}
    if info is None or "npz" in options:
        return None
    size = options.get("image_size") or info.default_image_size
    channels = options.get("channels")
    if info.input_shape is not None:
        return [channels or info.input_shape[0], *((size, size) if size else info.input_shape[1:])]
    if size is None:
        return None
    return [channels or 3, size, size]  # decoded images are read as RGB (clgrid.data.arrays.Split.channels)


def _check_dataset_files(config: dict[str, Any]) -> None:
    """The files and folders a used dataset is imported from exist (a folder only until it has been prepared)."""
    used = [d for b in config["benchmarks"] for d in datasets_of(config, b)]
    used += [name for run in config["methods"] for name in method_datasets(config, run)]
    for name in dict.fromkeys(n for n in used if n):
        options = config.get("datasets", {}).get(name, {})
        info = DATASETS.get(name)
        prepared = os.path.exists(PREPARED_DATASET.format(dataset=name))
        for key, what in (("npz", "file"), ("path", "folder")):
            location = options.get(key)
            if location is not None and os.path.exists(location):
                wrong = os.path.isdir(location) if key == "npz" else not os.path.isdir(location)
                if wrong and not (key == "path" and prepared):
                    raise ConfigError(
                        f"{location} is a folder, not an array file" if key == "npz"
                        else f"{location} is a file, not a folder",
                        path=("datasets", name, key), value=location,
                        allowed="an .npz file (x_train, y_train, x_test, y_test)" if key == "npz"
                        else "a folder in the dataset's raw layout (ImageNet: train/ and val/ of class folders)",
                        fix=f"point datasets.{name}.{key} at the {what}" + (
                            ", or use npz: for an array file" if key == "path" else ", or use path: for a raw folder"))
                continue
            if location is None:
                continue
            if key == "path" and prepared:
                continue  # prepared already: the raw folder is read only to prepare it
            if info is not None and info.no_download:
                fix = f"correct datasets.{name}.{key}; {info.no_download}"
            elif info is not None and info.url:
                fix = f"correct datasets.{name}.{key}, or remove it to download {name} ({info.url})"
            elif info is not None:
                fix = f"correct datasets.{name}.{key}, or remove it to use the registered source"
            else:
                fix = f"correct datasets.{name}.{key}"
            relative = "" if os.path.isabs(location) else f" (relative to {os.getcwd()})"
            raise ConfigError(f"no such {what}: {location}{relative}", path=("datasets", name, key), value=location,
                              allowed=f"an existing {what}, absolute or relative to the folder snakemake runs in",
                              fix=fix)


def check_array_files(config: dict[str, Any]) -> None:
    """An imported array file a used dataset reads holds what ``clgrid.data.arrays.read_npz`` needs: labels of
    both splits, images (or JPEG bytes) of both, class names and labels that agree with the class count. Reads the
    file's member list and its label arrays only (not the images)."""
    import numpy as np

    used = [d for b in config["benchmarks"] for d in datasets_of(config, b)]
    used += [name for run in config["methods"] for name in method_datasets(config, run)]
    for name in dict.fromkeys(n for n in used if n):
        path = ((config.get("datasets") or {}).get(name) or {}).get("npz")
        if not path or not os.path.isfile(path):
            continue
        where = ("datasets", name, "npz")
        n_classes = dataset_classes(config, name)
        try:
            with np.load(path, allow_pickle=False) as arrays:
                members = set(arrays.files)
                problem = next((f"lacks y_{s}" for s in ("train", "test") if f"y_{s}" not in members), None)
                problem = problem or next((f"lacks x_{s} (or x_{s}_jpeg and x_{s}_offsets)" for s in ("train", "test")
                                           if f"x_{s}" not in members and f"x_{s}_jpeg" not in members), None)
                if problem is None and "classes" in members and len(arrays["classes"]) != n_classes:
                    problem = (f"names {len(arrays['classes'])} classes, and the config counts {n_classes}")
                if problem is None:
                    for split in ("train", "test"):
                        y = arrays[f"y_{split}"]
                        if len(y) and (y.min() < 0 or y.max() >= n_classes):
                            problem = f"y_{split} holds labels {y.min()}..{y.max()}, not 0..{n_classes - 1}"
                            break
        except Exception as err:  # noqa: BLE001 - not a zip, truncated, a Git LFS pointer: all the same to a job
            problem = f"cannot be read as an .npz ({type(err).__name__}: {err})"
        if problem:
            counted = "n_classes" if name not in DATASETS else f"the registered count of '{name}'"
            raise ConfigError(f"the array file {problem}", path=where, value=path,
                              allowed="an .npz with x_train, y_train, x_test, y_test (labels 0..K-1) and optionally "
                                      f"classes (K names), K = {n_classes} ({counted})",
                              fix="point npz at a file that holds them" + (
                                  ", or correct n_classes" if name not in DATASETS else ""))


def _no_training_split(name: str) -> bool:
    """A registered dataset with test images only (CIFAR-10.1): its registry entry says so in ``split``."""
    info = DATASETS.get(name)
    return info is not None and (info.n_train == 0 or info.split.startswith("test split only"))


def check_training_data(config: dict[str, Any]) -> None:
    """The datasets tasks train on, and ZSCL's reference images, have training images."""
    for bench_name, bench in config["benchmarks"].items():
        where = ("benchmarks", bench_name)
        fields = ([((*where, "datasets", i), d) for i, d in enumerate(bench["datasets"])]
                  if bench["scenario"] == "dataset_sequence" else [((*where, "dataset"), bench["dataset"])])
        for field, name in fields:
            if _no_training_split(name) and "npz" not in ((config.get("datasets") or {}).get(name) or {}):
                raise ConfigError(f"'{name}' holds test images only ({DATASETS[name].split}): its tasks would have "
                                  "nothing to train on", path=field, value=name,
                                  allowed="a dataset with a training split; a test-only set belongs under eval_sets",
                                  fix=f"train on the dataset it shifts (e.g. cifar10) and add eval_sets: {{shifted: "
                                      f"{{dataset: {name}}}}}")
    for run in config["methods"]:
        method, params, _ = method_of(config, run)
        name = params.get("reference_dataset")
        if name and _no_training_split(name) and "npz" not in ((config.get("datasets") or {}).get(name) or {}):
            raise ConfigError(f"'{name}' holds test images only: zscl draws its reference images from a training "
                              "split, and would draw none", path=_param_path(config, run, "params",
                                                                               "reference_dataset"),
                              value=name, describe_as=("method_params", method, "reference_dataset"),
                              allowed="a dataset with a training split (e.g. imagenet, cifar100), or null",
                              fix="name a dataset with training images")
