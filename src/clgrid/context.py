"""The world of one job: its scenario, datasets and device, where inputs live, and the feature cache in place of
images when a run trains on a frozen backbone's features.

Every model job (initial evaluation, training, feature extraction, analysis) opens one ``JobContext``; a job that
trains several tasks keeps it across them, so the datasets and test sets are loaded once.

A job whose spec says ``evaluate_on: validation`` (a selection candidate) is evaluated on the tasks' validation
splits only, and its test arrays are never decoded: its datasets are ``SelectionArrays``, which refuse every test
member, so "no test data read by a selection job" is enforced rather than assumed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

from clgrid.io import load_npz, load_torch, read_json
from clgrid.spec import RunSpec

log = logging.getLogger("clgrid")


def load_datasets(dataset_files: list[str], names, selection_job: str | None = None) -> dict[str, Any]:
    """The prepared arrays of each named dataset, verified against the sha256 recorded when it was written.

    ``selection_job`` (the job's name, for a job that evaluates on validation data): the test members are not
    decoded, and each dataset is a ``SelectionArrays`` that raises when anything asks for one.
    """
    from clgrid.data.datasets import ARRAYS

    if selection_job is None:
        return {name: load_npz(_dataset_file(dataset_files, name), ARRAYS, verify=True) for name in sorted(set(names))}
    return {name: SelectionArrays(load_npz(_dataset_file(dataset_files, name), ARRAYS, verify=True,
                                           skip=is_test_member), name, selection_job)
            for name in sorted(set(names))}


def is_test_member(name: str) -> bool:
    """Whether an array of a prepared dataset belongs to its test split: ``x_test``, ``y_test``, ``x_test_jpeg``..."""
    return "test" in name.split("_")


class TestDataRefused(RuntimeError):
    """A selection job (``evaluate_on: validation``) asked for test data."""

    __test__ = False  # not a pytest test class


class SelectionArrays(Mapping):
    """The arrays of one dataset in a selection job: its training members only; asking for a test member (``x_test``,
    ``y_test``, any ``*_test_*``), even ``"x_test" in arrays``, raises ``TestDataRefused`` naming the job."""

    def __init__(self, arrays: dict[str, Any], dataset: str, job: str):
        self._arrays = {k: v for k, v in arrays.items() if not is_test_member(k)}
        self.dataset, self.job = dataset, job

    def __getitem__(self, key: str) -> Any:
        if is_test_member(key):
            raise TestDataRefused(f"job {self.job} is a selection job (evaluate_on: validation): it must not read "
                                  f"test data, but something asked for '{key}' of dataset '{self.dataset}'; a "
                                  "selection job evaluates on the tasks' validation splits (val_idx) only")
        return self._arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


def _dataset_file(dataset_files: list[str], name: str) -> str:
    by_name = {Path(p).stem: p for p in dataset_files}
    if name not in by_name:
        raise FileNotFoundError(f"dataset '{name}' is not among the inputs {sorted(by_name)}")
    return by_name[name]


class JobContext:
    """Scenario, datasets and device of one job, with task splits loaded on demand.

    ``placement`` says where inputs live: ``device`` (in memory on the training device, batches gathered there),
    ``host`` (host memory, batches streamed by a DataLoader with ``workers`` and pinned memory), or ``auto``:
    host when the job's datasets hold more than ``max_device_gb`` of images and the device is a GPU. It changes
    where batches come from, never which: results are the same.
    """

    def __init__(self, spec: RunSpec, scenario_path: str, dataset_files: list[str], threads: int,
                 placement: str = "auto", workers: int = 2, max_device_gb: float = 4.0, features: str | None = None,
                 extra_datasets: tuple[str, ...] = ()):
        import torch

        from clgrid.device import Precision, configure_device, resolve_device

        torch.set_num_threads(threads)
        self.spec = spec
        self.scenario = read_json(scenario_path)
        selection = spec.selection or {}
        if selection.get("role") == "candidate" and selection.get("k"):
            # A first-k candidate (clgrid.config.selection) learns and is scored on the first k tasks only; the
            # head keeps every class, so its states have the final runs' shape.
            self.scenario["tasks"] = self.scenario["tasks"][: int(selection["k"])]
        self.device = resolve_device(spec.device)
        # GPU: cudnn.benchmark, or deterministic kernels with train.deterministic; nothing on CPU (deterministic at a
        # fixed thread count already). Evaluation runs in the training precision (bf16 autocast on a recent GPU).
        train_cfg = spec.train_settings
        configure_device(self.device, train_cfg)
        self.precision = Precision(self.device, train_cfg.get("precision", "auto"))
        if spec.evaluate_on not in (None, "validation"):
            raise ValueError(f"evaluate_on '{spec.evaluate_on}' in the spec of {spec.run_id}; valid: validation, or "
                             "absent (the test sets)")
        self.evaluate_on = spec.evaluate_on or "test"
        names = [t["dataset"] for t in self.scenario["tasks"]]
        if self.evaluate_on == "validation":
            self._check_selection(spec, features)
        else:
            names += [s["dataset"] for s in self.scenario.get("eval_sets", {}).values()]
        names += list(extra_datasets)  # datasets a method draws from (ZSCL's reference images)
        self.datasets = load_datasets(dataset_files, names,
                                      selection_job=spec.run_id if self.evaluate_on == "validation" else None)
        self._test_sets = None
        self._validation_sets = None
        # Cached features of the frozen backbone (extract_features): they replace every split's inputs.
        self.features = load_torch(features) if features else None
        if self.features is not None and len(self.features["train"]) != len(self.scenario["tasks"]):
            raise ValueError(f"'{features}' holds features of {len(self.features['train'])} tasks, the scenario has "
                             f"{len(self.scenario['tasks'])}; delete it so the extract_features job rebuilds it")
        image_bytes = sum(d["x_train"].nbytes + (d["x_test"].nbytes if self.evaluate_on == "test" else 0)
                          for d in self.datasets.values())
        if placement == "auto":
            placement = "host" if self.device.type == "cuda" and image_bytes > max_device_gb * 2**30 else "device"
        if placement not in ("device", "host"):
            raise ValueError(f"unknown data placement '{placement}'; valid: auto, device, host")
        self.loader = None if placement == "device" else {"num_workers": workers,
                                                            "pin_memory": self.device.type == "cuda"}
        # Where training inputs live, and so the inputs a method stores (buffers, exemplars, memories).
        self.inputs_device = self.device if self.loader is None else torch.device("cpu")
        log.info("data: %.2f GB of images, placement %s", image_bytes / 2**30, placement)

    def _check_selection(self, spec: RunSpec, features: str | None) -> None:
        """A job evaluated on validation data needs the scenario's validation splits and trains on images."""
        missing = [t["id"] for t in self.scenario["tasks"] if "val_idx" not in t]
        if missing:
            raise ValueError(f"{spec.run_id} is evaluated on validation data (evaluate_on: validation), but the "
                             f"scenario '{self.scenario['name']}' sets no validation split aside (tasks {missing}): "
                             f"add validation: {{fraction: 0.1}} to benchmarks.{spec.benchmark}")
        if features:
            raise ValueError(f"{spec.run_id} is a selection job (evaluate_on: validation) and was given the feature "
                             f"cache '{features}', which holds test features: a selection job trains through the "
                             "backbone (feature_cache: false in its spec)")

    @property
    def has_validation(self) -> bool:
        """Whether the scenario sets validation splits aside (benchmark ``validation:``)."""
        return all("val_idx" in t for t in self.scenario["tasks"])

    def _tensors(self, x, y):
        import torch

        # uint8 images stay uint8 (4x less memory than float); the model's preprocess scales them on the device.
        # Labels always live on the device; host-placed inputs wait in (pinned) host memory for the loader.
        x = torch.from_numpy(x)
        if self.loader is None:
            x = x.to(self.device)
        elif self.loader["pin_memory"]:
            x = x.pin_memory()
        return x, torch.from_numpy(y).to(self.device)

    def task_data(self, task_id: int, split: str):
        """One task's ``train``, ``test`` or ``validation`` split (the training samples at its ``val_idx``)."""
        from clgrid.data.scenarios import task_arrays
        from clgrid.methods import TaskData

        x, y = task_arrays(self.datasets, self.scenario, task_id, split)
        x, y = self._tensors(self._cached(x, split, task_id), y)
        return TaskData(task_id, x, y, list(self.scenario["tasks"][task_id]["classes"]), loader=self.loader)

    def _cached(self, x, key: str, index: int | None = None, name: str | None = None):
        """``x``, or its cached features when the job trains on them (``key``: train, test, unseen or sets)."""
        if self.features is None:
            return x
        cached = self.features[key]
        cached = cached[name] if name is not None else cached
        cached = cached[index] if index is not None else cached
        if len(cached) != len(x):
            raise ValueError(f"cached features of {key} {name or ''} {index if index is not None else ''} hold "
                             f"{len(cached)} samples, the data {len(x)}: the cache is stale; delete it to rebuild")
        return cached.numpy()

    def sample_images(self, name: str, n: int, generator):
        """``n`` training images of dataset ``name`` drawn with ``generator``, in the scenario's input shape (uint8)."""
        import torch

        from clgrid.data.scenarios import conform

        x = self.datasets[name]["x_train"]
        pick = torch.randperm(len(x), generator=generator)[: min(n, len(x))].sort().values.numpy()
        return torch.from_numpy(conform(x[pick], self.scenario["input_shape"]))

    def validation_sets(self) -> list:
        """Each task's validation split as (x, y, classes), transformed like the task; loaded once per job."""
        if self._validation_sets is None:
            tasks = [self.task_data(i, "validation") for i in range(len(self.scenario["tasks"]))]
            self._validation_sets = [(d.x, d.y, d.classes) for d in tasks]
        return self._validation_sets

    def test_sets(self) -> dict[str, list]:
        """Every evaluation set, each a list of (x, y, classes): the tasks' test splits, the held-out classes
        (one set) and each evaluation-only set split like the tasks. Loaded once per job. A job evaluated on
        validation data (``evaluate_on: validation``) has one: the tasks' validation splits, under ``tasks``."""
        from clgrid.data.scenarios import select

        if self._test_sets is None and self.evaluate_on == "validation":
            self._test_sets = {"tasks": self.validation_sets()}
        if self._test_sets is None:
            shape = self.scenario["input_shape"]
            tests = [self.task_data(i, "test") for i in range(len(self.scenario["tasks"]))]
            sets = {"tasks": [(d.x, d.y, d.classes) for d in tests]}
            holdout = self.scenario.get("holdout")
            if holdout:
                x, y = select(self.datasets[holdout["dataset"]], "test", holdout["test_idx"], holdout["label_offset"],
                              holdout["transform"], shape)
                sets["unseen"] = [(*self._tensors(self._cached(x, "unseen"), y), holdout["classes"])]
            for name, eval_set in self.scenario.get("eval_sets", {}).items():
                parts = []
                for i, (task, part) in enumerate(zip(self.scenario["tasks"], eval_set["tasks"])):
                    x, y = select(self.datasets[eval_set["dataset"]], "test", part["test_idx"], part["label_offset"],
                                  part["transform"], shape)
                    parts.append((*self._tensors(self._cached(x, "sets", i, name), y), task["classes"]))
                sets[f"set:{name}"] = parts
            self._test_sets = sets
        return self._test_sets

    def unseen_train(self):
        """The held-out classes' training split (x, y): only the retrieval evaluation reads it, to add their
        embeddings to the index without training on them."""
        from clgrid.data.scenarios import select

        holdout = self.scenario["holdout"]
        if "train_idx" not in holdout:
            raise ValueError("the scenario file predates held-out training splits; delete it so prepare_scenario "
                             "rebuilds it")
        x, y = select(self.datasets[holdout["dataset"]], "train", holdout["train_idx"], holdout["label_offset"],
                      holdout["transform"], self.scenario["input_shape"])
        return self._tensors(self._cached(x, "unseen_train"), y)

    def build_model(self):
        from clgrid.models import build_model

        # A checkpoint is loaded over it, so pretrained weights are not read again.
        return build_model(self.spec.backbone_cfg, self.scenario["input_shape"], self.scenario["n_classes"],
                           input_norm=self.scenario.get("input_norm"), class_names=self.scenario.get("class_names"),
                           load_weights=False, dataset=scenario_dataset(self.scenario))


def scenario_dataset(scenario: dict[str, Any]) -> str | None:
    """The one dataset every task draws from (prompt templates follow it), or None for a mixed sequence."""
    names = {task["dataset"] for task in scenario["tasks"]}
    return names.pop() if len(names) == 1 else None
