"""Data jobs: a dataset's raw files, its prepared form (one .npz), and a benchmark's split into tasks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clgrid.io import provenance, write_json
from clgrid.spec import DatasetSpec, ScenarioSpec

log = logging.getLogger("clgrid")


def download_dataset(name: str, raw_dir: str, marker: str) -> None:
    """Fetch a dataset's raw files into ``raw_dir``; the marker file says the download finished."""
    from clgrid.data.datasets import download_dataset as fetch
    from clgrid.io import atomic_path

    fetch(name, raw_dir)
    with atomic_path(marker) as tmp:
        tmp.write_text(f"{name} downloaded into {raw_dir}\n")


def prepare_dataset(spec: DatasetSpec | dict[str, Any], out: str, raw_dir: str | None = None) -> None:
    """Write a dataset's uniform form (one .npz) and its sidecar JSON with the file's sha256."""
    from clgrid.data.datasets import get_dataset, prepare_dataset as prepare

    spec = DatasetSpec.of(spec)
    options = spec.options or {}
    source = options.get("npz") or options.get("path") or raw_dir or get_dataset(spec.dataset).source
    log.info("preparing dataset '%s' from %s", spec.dataset, source)
    meta = prepare(spec.dataset, out, dict(options), raw_dir)
    log.info("wrote %s (sha256 %s)", out, meta.get("sha256", "?"))


def prepare_scenario(spec: ScenarioSpec | dict[str, Any], dataset_files: list[str], out: str) -> None:
    """A benchmark's tasks (classes, sample indices, transforms) and its input normalisation, as one JSON."""
    from clgrid.context import load_datasets
    from clgrid.data.scenarios import build_scenario, input_normalization

    spec = ScenarioSpec.of(spec)
    data = load_datasets(dataset_files, [Path(p).stem for p in dataset_files])
    scenario = build_scenario(spec.benchmark, spec.benchmark_cfg, data)
    scenario["input_norm"] = input_normalization(scenario, spec.benchmark_cfg, data)
    scenario["provenance"] = provenance(spec.to_json())
    write_json(out, scenario)
    _log_tasks(scenario, data)


def _log_tasks(scenario: dict[str, Any], data: dict[str, dict[str, Any]]) -> None:
    for task in scenario["tasks"]:
        n_train = len(task["train_idx"]) if task["train_idx"] is not None else len(data[task["dataset"]]["y_train"])
        n_test = len(task["test_idx"]) if task["test_idx"] is not None else len(data[task["dataset"]]["y_test"])
        log.info("task %d (%s): classes %s, %d train / %d test samples%s, transform %s", task["id"], task["dataset"],
                 task["classes"] if len(task["classes"]) <= 20 else f"{len(task['classes'])} classes",
                 n_train, n_test, f" / {len(task['val_idx'])} validation" if "val_idx" in task else "",
                 sorted(task["transform"]) if task["transform"] else None)
    if scenario["holdout"]:
        log.info("held out (never trained): classes %s, %d test samples", scenario["holdout"]["classes"],
                 len(scenario["holdout"]["test_idx"]))
