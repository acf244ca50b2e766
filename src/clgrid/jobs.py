"""What each ``clgrid`` verb does: read inputs, call the library, write outputs atomically.

One function per Snakemake rule. Heavy libraries are imported inside the
functions that need them, so a metrics or tables job never pays for torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clgrid.io import (load_npz, load_torch, provenance, read_json, remove_output, save_torch, verified_sha256,
                       write_json)

log = logging.getLogger("clgrid")


def download_dataset(name: str, raw_dir: str, marker: str) -> None:
    """Fetch a dataset's raw files into ``raw_dir``; the marker file says the download finished."""
    from clgrid.data.datasets import download_dataset as fetch
    from clgrid.io import atomic_path

    fetch(name, raw_dir)
    with atomic_path(marker) as tmp:
        tmp.write_text(f"{name} downloaded into {raw_dir}\n")


def download_weights(backbone_cfg: dict[str, Any], out: str | None = None) -> None:
    """Fetch a backbone's pretrained weights into the cache its loader reads (open_clip / Hugging Face / torch hub),
    so later jobs load them offline; writes a marker JSON saying what is where. Random or file weights: nothing."""
    import os

    from clgrid.models import backbone_options

    arch = backbone_cfg["arch"]
    options = backbone_options(backbone_cfg)
    fetched: dict[str, Any] = {"arch": arch}
    if arch == "clip" and options["pretrained"] and not os.path.isfile(options["pretrained"]):
        from clgrid.models.clip import load_open_clip, register_config_file

        if options.get("model_config"):
            register_config_file(options["model_config"])
        load_open_clip(options["model"], options["pretrained"], options.get("cache_dir"))
        fetched.update(model=options["model"], pretrained=options["pretrained"],
                       cache=options.get("cache_dir") or "the Hugging Face cache")
    elif arch == "flava" and options["pretrained"] and not os.path.isdir(options["pretrained"]):
        from clgrid.models.flava import load_flava_image_model

        load_flava_image_model(options["pretrained"], None, options.get("cache_dir"))
        fetched.update(pretrained=options["pretrained"], cache=options.get("cache_dir") or "the Hugging Face cache")
    elif arch in ("resnet18", "resnet50", "vit_b_16") and options.get("weights") == "imagenet":
        from clgrid.models.torchvision_weights import cached_file, load_state_dict

        load_state_dict(arch, "imagenet")
        fetched.update(weights="imagenet", cache=cached_file(arch))
    else:
        fetched["note"] = "random initialisation or a local weights file: nothing to fetch"
    log.info("weights of %s: %s", arch, fetched)
    if out:
        write_json(out, fetched)


def prepare_dataset(spec: dict[str, Any], out: str, raw_dir: str | None = None) -> None:
    """Write a dataset's uniform form (one .npz) and its sidecar JSON with the file's sha256."""
    from clgrid.data.datasets import get_dataset, prepare_dataset as prepare

    name, options = spec["dataset"], spec.get("options", {})
    source = options.get("npz") or options.get("path") or raw_dir or get_dataset(name).source
    log.info("preparing dataset '%s' from %s", name, source)
    meta = prepare(name, out, options, raw_dir)
    log.info("wrote %s (sha256 %s)", out, meta.get("sha256", "?"))


def load_datasets(dataset_files: list[str], names) -> dict[str, dict[str, Any]]:
    """The prepared arrays of each named dataset, verified against the sha256 recorded when it was written."""
    from clgrid.data.datasets import ARRAYS

    return {name: load_npz(_dataset_file(dataset_files, name), ARRAYS, verify=True) for name in sorted(set(names))}


def prepare_scenario(spec: dict[str, Any], dataset_files: list[str], out: str) -> None:
    import numpy as np

    from clgrid.data.scenarios import build_scenario, conform
    from clgrid.data.transforms import normalization

    bench = spec["benchmark_cfg"]
    names = [Path(p).stem for p in dataset_files]
    data = load_datasets(dataset_files, names)
    scenario = build_scenario(spec["benchmark"], bench, data)
    # Normalisation statistics of the training pixels the tasks use, fixed here so every job applies the same.
    trained = dict.fromkeys(t["dataset"] for t in scenario["tasks"])  # each dataset once, in task order
    samples = [conform(data[d]["x_train"][:: max(1, len(data[d]["x_train"]) // 5000)], scenario["input_shape"])
               for d in trained if len(data[d]["x_train"])]
    pixels = np.concatenate(samples) if samples else np.zeros((0, *scenario["input_shape"]), np.uint8)
    scenario["input_norm"] = normalization(bench.get("transform", {}), pixels)
    scenario["provenance"] = provenance(spec)
    write_json(out, scenario)
    for task in scenario["tasks"]:
        n_train = len(task["train_idx"]) if task["train_idx"] is not None else len(data[task["dataset"]]["y_train"])
        n_test = len(task["test_idx"]) if task["test_idx"] is not None else len(data[task["dataset"]]["y_test"])
        log.info("task %d (%s): classes %s, %d train / %d test samples, transform %s", task["id"], task["dataset"],
                 task["classes"] if len(task["classes"]) <= 20 else f"{len(task['classes'])} classes",
                 n_train, n_test, sorted(task["transform"]) if task["transform"] else None)
    if scenario["holdout"]:
        log.info("held out (never trained): classes %s, %d test samples", scenario["holdout"]["classes"],
                 len(scenario["holdout"]["test_idx"]))


def _dataset_file(dataset_files: list[str], name: str) -> str:
    by_name = {Path(p).stem: p for p in dataset_files}
    if name not in by_name:
        raise FileNotFoundError(f"dataset '{name}' is not among the inputs {sorted(by_name)}")
    return by_name[name]


class _Context:
    """Scenario, datasets and device of one job, with task splits loaded on demand.

    ``placement`` says where inputs live: ``device`` (in memory on the training device, batches gathered there),
    ``host`` (host memory, batches streamed by a DataLoader with ``workers`` and pinned memory), or ``auto``:
    host when the job's datasets hold more than ``max_device_gb`` of images and the device is a GPU. It changes
    where batches come from, never which: results are the same.
    """

    def __init__(self, spec: dict[str, Any], scenario_path: str, dataset_files: list[str], threads: int,
                 placement: str = "auto", workers: int = 2, max_device_gb: float = 4.0, features: str | None = None,
                 extra_datasets: tuple[str, ...] = ()):
        import torch

        from clgrid.device import Precision, configure_device, resolve_device

        torch.set_num_threads(threads)
        self.spec = spec
        self.scenario = read_json(scenario_path)
        self.device = resolve_device(spec["device"])
        # GPU: cudnn.benchmark, or deterministic kernels with train.deterministic; nothing on CPU (deterministic at a
        # fixed thread count already). Evaluation runs in the training precision (bf16 autocast on a recent GPU).
        train_cfg = spec.get("train", {})
        configure_device(self.device, train_cfg)
        self.precision = Precision(self.device, train_cfg.get("precision", "auto"))
        names = [t["dataset"] for t in self.scenario["tasks"]]
        names += [s["dataset"] for s in self.scenario.get("eval_sets", {}).values()]
        names += list(extra_datasets)  # datasets a method draws from (ZSCL's reference images)
        self.datasets = load_datasets(dataset_files, names)
        self._test_sets = None
        # Cached features of the frozen backbone (extract_features): they replace every split's inputs.
        self.features = load_torch(features) if features else None
        if self.features is not None and len(self.features["train"]) != len(self.scenario["tasks"]):
            raise ValueError(f"'{features}' holds features of {len(self.features['train'])} tasks, the scenario has "
                             f"{len(self.scenario['tasks'])}; delete it so the extract_features job rebuilds it")
        image_bytes = sum(d["x_train"].nbytes + d["x_test"].nbytes for d in self.datasets.values())
        if placement == "auto":
            placement = "host" if self.device.type == "cuda" and image_bytes > max_device_gb * 2**30 else "device"
        if placement not in ("device", "host"):
            raise ValueError(f"unknown data placement '{placement}'; valid: auto, device, host")
        self.loader = None if placement == "device" else {"num_workers": workers,
                                                            "pin_memory": self.device.type == "cuda"}
        # Where training inputs live, and so the inputs a method stores (buffers, exemplars, memories).
        self.inputs_device = self.device if self.loader is None else torch.device("cpu")
        log.info("data: %.2f GB of images, placement %s", image_bytes / 2**30, placement)

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

    def test_sets(self) -> dict[str, list]:
        """Every evaluation set, each a list of (x, y, classes): the tasks' test splits, the held-out classes
        (one set) and each evaluation-only set split like the tasks. Loaded once per job."""
        from clgrid.data.scenarios import select

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
        return build_model(self.spec["backbone_cfg"], self.scenario["input_shape"], self.scenario["n_classes"],
                           input_norm=self.scenario.get("input_norm"), class_names=self.scenario.get("class_names"),
                           load_weights=False, dataset=_scenario_dataset(self.scenario))


def _scenario_dataset(scenario: dict[str, Any]) -> str | None:
    """The one dataset every task draws from (prompt templates follow it), or None for a mixed sequence."""
    names = {task["dataset"] for task in scenario["tasks"]}
    return names.pop() if len(names) == 1 else None


def init_model(spec: dict[str, Any], scenario_path: str, out: str) -> None:
    """The initial weights of a (benchmark, backbone, seed), shared by every method of that seed."""
    import torch

    from clgrid.models import build_model

    scenario = read_json(scenario_path)
    torch.manual_seed(spec["seed"])
    model = build_model(spec["backbone_cfg"], scenario["input_shape"], scenario["n_classes"],
                        input_norm=scenario.get("input_norm"), class_names=scenario.get("class_names"),
                        dataset=_scenario_dataset(scenario))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("initialised %s with %d parameters (seed %d)", spec["backbone"], n_params, spec["seed"])
    save_torch(out, {"clgrid": provenance(spec, spec["seed"]), "task": -1, "model": model.state_dict()})


def extract_features(spec: dict[str, Any], scenario_path: str, dataset_files: list[str], init: str, out: str,
                     threads: int = 1) -> None:
    """The frozen backbone's features of every task's train and test split, the held-out classes and each
    evaluation-only set: computed once, read by every frozen-backbone run of this benchmark and backbone."""
    from clgrid.models.feature_cache import extract as extract_features_of, state_digest

    ctx = _Context(spec, scenario_path, dataset_files, threads)
    model = ctx.build_model()
    model.load_state_dict(load_torch(init)["model"])
    model.to(ctx.device).eval()
    n_tasks = len(ctx.scenario["tasks"])
    cache: dict[str, Any] = {"train": [], "test": []}

    def extract(model, x):  # under the runs' precision (the benchmark's train.precision, in the spec)
        return extract_features_of(model, x, autocast=ctx.precision.autocast)

    for split in ("train", "test"):
        for i in range(n_tasks):
            cache[split].append(extract(model, ctx.task_data(i, split).x))
            log.info("task %d %s: %d features of dim %d", i, split, *cache[split][-1].shape[:2])
    sets = ctx.test_sets()
    cache["unseen"] = extract(model, sets["unseen"][0][0]) if "unseen" in sets else None
    cache["unseen_train"] = extract(model, ctx.unseen_train()[0]) if "unseen" in sets else None
    cache["sets"] = {key[4:]: [extract(model, x) for x, _, _ in parts] for key, parts in sets.items()
                     if key.startswith("set:")}
    samples = sum(len(f) for split in ("train", "test") for f in cache[split]) + len(cache["unseen"] or []) + \
        len(cache["unseen_train"] or []) + sum(
        len(f) for parts in cache["sets"].values() for f in parts)
    save_torch(out, {"clgrid": provenance(spec, spec["seed"], str(ctx.device)), **cache,
                     "backbone_digest": state_digest(model.backbone), "backbone_samples": samples})
    log.info("wrote %s: %d samples through the backbone once", out, samples)


def _retrieval_record(ctx, embed, task_id: int) -> dict[str, Any]:
    """Retrieval after task ``task_id`` (precision@1, recall@k, MAP@R, NMI): the seen classes' test embeddings
    against their training embeddings and, with held-out classes, the unseen test embeddings against the seen and
    unseen training embeddings (the unseen classes added to the index without training). Every reference is
    embedded by the current model, so any method's features (a classifier's backbone) can be compared."""
    import torch

    from clgrid.evaluate import retrieval_metrics

    def embedded(parts):
        return torch.cat([embed(x).cpu() for x, _ in parts]), torch.cat([y.cpu() for _, y in parts])

    seen_train = [(d.x, d.y) for d in (ctx.task_data(i, "train") for i in range(task_id + 1))]
    seen_test = [(x, y) for x, y, _ in ctx.test_sets()["tasks"][: task_id + 1]]
    reference, reference_labels = embedded(seen_train)
    query, query_labels = embedded(seen_test)
    record = {"seen": retrieval_metrics(query, query_labels, reference, reference_labels)}
    if "unseen" in ctx.test_sets():
        unseen_ref, unseen_ref_labels = embedded([ctx.unseen_train()])
        unseen_query, unseen_labels = embedded([ctx.test_sets()["unseen"][0][:2]])
        record["unseen"] = retrieval_metrics(unseen_query, unseen_labels, torch.cat([reference, unseen_ref]),
                                             torch.cat([reference_labels, unseen_ref_labels]))
        record["p_at_1_drop"] = record["seen"]["p_at_1"] - record["unseen"]["p_at_1"]
    return record


def _eval_record(spec, ctx, predict, task_id: int, method=None) -> dict[str, Any]:
    """Row ``task_id`` of every accuracy matrix: class-IL and task-IL on each task, unseen classes, extra sets;
    with a metric-learning method or ``retrieval: true``, the retrieval metrics too."""
    import torch

    from clgrid.evaluate import accuracy_row

    sets = ctx.test_sets()
    tasks = accuracy_row(predict, sets["tasks"], ctx.precision)
    record = {"after_task": task_id, "acc": tasks["class_il"], "acc_task_il": tasks["task_il"],
              "top5": tasks["top5"]}
    if "unseen" in sets:
        record["unseen_acc"] = accuracy_row(predict, sets["unseen"], ctx.precision)["class_il"][0]
    for key, parts in sets.items():
        if key.startswith("set:"):
            row = accuracy_row(predict, parts, ctx.precision)
            record[f"acc_{key[4:]}"] = row["class_il"]
            record[f"acc_{key[4:]}_task_il"] = row["task_il"]
    log.info("after task %d: accuracy per task %s (task-IL %s)%s", task_id,
             " ".join(f"{a:.1f}" for a in record["acc"]), " ".join(f"{a:.1f}" for a in record["acc_task_il"]),
             f", unseen classes {record['unseen_acc']:.1f}" if "unseen_acc" in record else "")
    if method is not None and (getattr(method, "retrieval", False) or spec["benchmark_cfg"].get("retrieval")):
        record["retrieval"] = _retrieval_record(ctx, method.embed, task_id)
        index = method.approximate_index() if hasattr(method, "approximate_index") else None
        if index is not None:  # an approximate index: its recall against exact search
            queries = torch.cat([method.embed(x).cpu() for x, _, _ in ctx.test_sets()["tasks"][: task_id + 1]])
            record["retrieval"]["index_recall_at_10_vs_exact"] = index.recall_vs_exact(queries, 10)
        seen, unseen = record["retrieval"]["seen"], record["retrieval"].get("unseen")
        log.info("after task %d: retrieval precision@1 %.1f on seen classes%s", task_id, seen["p_at_1"],
                 f", {unseen['p_at_1']:.1f} on unseen classes" if unseen else "")
    record["provenance"] = provenance(spec, spec["seed"], str(ctx.device))
    return record


def evaluate(spec: dict[str, Any], scenario_path: str, dataset_files: list[str], state: str, out: str, threads: int = 1) -> None:
    """Accuracy of a saved model (any checkpoint) on every task's test set."""
    ctx = _Context(spec, scenario_path, dataset_files, threads)
    model = ctx.build_model()
    checkpoint = load_torch(state)
    model.load_state_dict(checkpoint["model"])
    model.to(ctx.device).eval()
    write_json(out, _eval_record(spec, ctx, model, checkpoint["task"]))


def train_tasks(
    spec: dict[str, Any],
    scenario_path: str,
    dataset_files: list[str],
    prev: str,
    task_ids: list[int],
    out_states: list[str],
    out_evals: list[str],
    threads: int = 1,
    placement: str = "auto",
    workers: int = 2,
    checkpoint_every_s: float | None = 600.0,
    features: str | None = None,
    task_logs: list[str] | tuple[str, ...] = (),
) -> None:
    """Train consecutive tasks of one run in this process: exactly ``train`` once per task, task t reading the
    state task t-1 wrote (so the files are byte-identical to one job per task), with the scenario, datasets and
    test sets loaded once. ``task_logs``: a file per task that also gets that task's log messages."""
    if not (len(task_ids) == len(out_states) == len(out_evals)) or (task_logs and len(task_logs) != len(task_ids)):
        raise ValueError(f"{len(task_ids)} tasks need as many --out-state, --out-eval (and --task-logs) paths; got "
                         f"{len(out_states)}, {len(out_evals)} and {len(task_logs)}")
    if any(b != a + 1 for a, b in zip(task_ids, task_ids[1:])):
        raise ValueError(f"tasks {task_ids} are not consecutive: each task continues from the one before it")
    ctx = None
    for i, task_id in enumerate(task_ids):
        handler = _task_log_handler(task_logs[i]) if task_logs else None
        try:
            ctx = train(spec, scenario_path, dataset_files, out_states[i - 1] if i else prev, task_id, out_states[i],
                        out_evals[i], threads, placement, workers, checkpoint_every_s, features, ctx=ctx)
        finally:
            if handler is not None:
                logging.getLogger().removeHandler(handler)
                handler.close()


def _task_log_handler(path: str) -> logging.Handler:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def train(
    spec: dict[str, Any],
    scenario_path: str,
    dataset_files: list[str],
    prev: str,
    task_id: int,
    out_state: str,
    out_eval: str,
    threads: int = 1,
    placement: str = "auto",
    workers: int = 2,
    checkpoint_every_s: float | None = 600.0,
    features: str | None = None,
    ctx: _Context | None = None,
) -> _Context:
    """Continue a run from the previous task's state, train task ``task_id``, save state and evaluate.

    Preemption-safe: every ``checkpoint_every_s`` seconds of training the job writes ``<state>.resume.pt``
    atomically; a job started again after a kill (SIGTERM, SIGKILL, node loss) continues from it and ends with
    the same state and metrics as an uninterrupted run. The file is removed once the task's outputs exist.

    Evaluation runs in the same process: it always follows training, and a
    second job would pay the torch import (about 2.4 s here) again for
    milliseconds of work.

    Returns the job's context (scenario, datasets, test sets) for the next task of a multi-task job.

    ``features`` (a frozen backbone's cache, see ``clgrid.models.feature_cache``): the head trains and is evaluated
    on them and the backbone never runs; the state saved is the whole model, as without the cache.
    """
    import contextlib

    import torch

    from clgrid.models.feature_cache import BackboneCounter, head_only, state_digest

    reference = spec["method_params"].get("reference_dataset")
    if ctx is None:  # a job training several tasks passes the context of its first task on
        ctx = _Context(spec, scenario_path, dataset_files, threads, placement, workers, features=features,
                       extra_datasets=(reference,) if reference else ())
    previous = load_torch(prev)
    if previous["task"] != task_id - 1:
        raise ValueError(f"'{prev}' holds the state after task {previous['task']}, but task {task_id} needs task {task_id - 1}")
    torch.manual_seed(spec["seed"] * 1000 + task_id)
    model = ctx.build_model()
    model.load_state_dict(previous["model"])
    model.to(ctx.device)
    counter = BackboneCounter(model.backbone)
    cached = contextlib.nullcontext()
    if ctx.features is not None:
        if state_digest(model.backbone) != ctx.features["backbone_digest"]:
            raise ValueError(f"the cached features '{features}' were computed by other backbone weights than this "
                             "run's: its backbone is not frozen, or the cache is stale (delete it to rebuild)")
        cached = head_only(model)
        log.info("training the head on cached features (%s); the frozen backbone does not run", features)
    if "diverged" in previous:
        state, record = _carry_divergence(spec, ctx, previous, task_id)
    else:
        with cached:
            state, record = _train_task(spec, ctx, model, previous, task_id, out_state, checkpoint_every_s)
    counter.remove()
    # A measurement of this job, not a result (a resumed job counts fewer): the log holds it, eval.json does not.
    log.info("samples through the backbone in this job: %d", counter.samples)
    save_torch(out_state, {**state, "model": model.state_dict()})
    write_json(out_eval, record)
    remove_output(out_state + ".resume.pt")
    return ctx


def _train_task(spec: dict[str, Any], ctx: _Context, model, previous: dict[str, Any], task_id: int, out_state: str,
                checkpoint_every_s: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one task and evaluate; returns the state to save (without the model's weights) and the eval record."""
    from clgrid.data.transforms import make_augment
    from clgrid.methods import get_method
    from clgrid.train import TrainingDiverged, fit_task, task_generator

    generator = task_generator(spec["seed"], task_id)
    transform_cfg = spec["benchmark_cfg"].get("transform", {})
    augment = make_augment(transform_cfg, generator) if transform_cfg.get("augment", "none") != "none" else None
    reference = spec["method_params"].get("reference_dataset")
    sampler = (lambda n, gen: ctx.sample_images(reference, n, gen)) if reference else None
    method = get_method(spec["method_name"])(model, spec["method_params"], ctx.scenario["n_classes"],
                                             inputs_device=ctx.inputs_device, precision=ctx.precision,
                                             augment=augment, reference_images=sampler)
    if "method" in previous:
        method.load_state_dict(previous["method"])

    def load_task(i: int):
        return ctx.task_data(i, "train")

    data = method.training_data(load_task(task_id), load_task)
    log.info("run %s/%s/%s/s%d task %d: %d training samples on %s",
             spec["benchmark"], spec["backbone"], spec["method"], spec["seed"], task_id, len(data.y), ctx.device)
    resume_path = Path(out_state + ".resume.pt")
    resume = _load_resume(resume_path, spec, task_id)

    def checkpoint(payload: dict[str, Any]) -> None:
        save_torch(resume_path, {"clgrid": provenance(spec, spec["seed"], str(ctx.device)), "task": task_id,
                                 "resume": payload})
        log.info("in-job checkpoint: epoch %d, batch %d -> %s", payload["epoch"] + 1, payload["batches_done"],
                 resume_path)

    try:
        epoch_losses = fit_task(model, method, data, spec["train"], generator, augment, checkpoint,
                                checkpoint_every_s, resume)
    except TrainingDiverged as err:
        if spec["train"].get("on_divergence", "stop") != "record":
            raise
        # The run is a result too (a sweep's too-large learning rate): its files say it diverged, the grid goes on.
        log.error("%s: recorded as diverged (train.on_divergence: record); the run's later tasks are not trained",
                  err.summary)
        diverged = err.record()
        state = {"clgrid": provenance(spec, spec["seed"], str(ctx.device)), "task": task_id,
                 "method": method.state_dict(), "epoch_losses": err.epoch_losses, "diverged": diverged}
        return state, {**_diverged_record(spec, ctx, task_id, diverged), "epoch_losses": err.epoch_losses}
    prov = provenance(spec, spec["seed"], str(ctx.device))
    state = {"clgrid": prov, "task": task_id, "method": method.state_dict(), "epoch_losses": epoch_losses}
    record = _eval_record(spec, ctx, method.predict, task_id, method)
    record["epoch_losses"] = epoch_losses
    return state, record


def _diverged_record(spec: dict[str, Any], ctx: _Context, task_id: int, diverged: dict[str, Any]) -> dict[str, Any]:
    """The evaluation row of a task at or after the one where the run diverged: the keys ``_eval_record`` writes,
    every accuracy NaN (a model blown up mid-task, or never trained on the task, measures nothing of the method)."""
    nan = [float("nan")] * len(ctx.scenario["tasks"])
    record = {"after_task": task_id, "acc": nan, "acc_task_il": nan, "top5": nan, "diverged": diverged}
    if ctx.scenario.get("holdout"):
        record["unseen_acc"] = float("nan")
    for name in ctx.scenario.get("eval_sets", {}):
        record[f"acc_{name}"] = record[f"acc_{name}_task_il"] = nan
    record["provenance"] = provenance(spec, spec["seed"], str(ctx.device))
    return record


def _carry_divergence(spec: dict[str, Any], ctx: _Context, previous: dict[str, Any], task_id: int):
    """A task after the one where the run diverged: not trained; the state (the diverged model) and the flag go on."""
    diverged = previous["diverged"]
    log.warning("run %s/%s/%s/s%d diverged at task %d (step %d, loss %s): task %d is not trained, its accuracies are "
                "NaN", spec["benchmark"], spec["backbone"], spec["method"], spec["seed"], diverged["task"],
                diverged["step"], diverged["loss"], task_id)
    state = {"clgrid": provenance(spec, spec["seed"], str(ctx.device)), "task": task_id, "epoch_losses": [],
             "diverged": diverged}
    if "method" in previous:
        state["method"] = previous["method"]
    return state, {**_diverged_record(spec, ctx, task_id, diverged), "epoch_losses": []}


def _load_resume(path: Path, spec: dict[str, Any], task_id: int) -> dict[str, Any] | None:
    """The in-job checkpoint of this very task and spec, if a killed run left one; anything else is ignored."""
    from clgrid.io import CorruptFileError, config_hash

    if not path.exists():
        return None
    try:
        saved = load_torch(path)
    except CorruptFileError as err:
        log.warning("ignoring unreadable in-job checkpoint (%s); training the task from its start", err)
        return None
    if saved.get("task") != task_id or saved["clgrid"].get("config_hash") != config_hash(spec):
        log.warning("ignoring in-job checkpoint %s: it belongs to another task or config", path)
        return None
    log.info("resuming from in-job checkpoint %s", path)
    return saved["resume"]


def _run_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """The keys that name a run in every per-run result file."""
    keys = ("benchmark", "backbone", "method", "seed")
    return {"run": "{}/{}/{}/s{}".format(*(spec[k] for k in keys)), **{k: spec[k] for k in keys}}


def run_metrics(spec: dict[str, Any], init_eval: str, task_evals: list[str], out: str, task_states: list[str] = ()) -> None:
    """The accuracy matrix of a run and every metric computed from it, with the checksums of its checkpoints."""
    from clgrid import metrics

    init = read_json(init_eval)
    rows = [read_json(p) for p in task_evals]
    for t, row in enumerate(rows):
        if row["after_task"] != t:
            raise ValueError(f"'{task_evals[t]}' is the evaluation after task {row['after_task']}, expected {t}")
    acc_matrix = [row["acc"] for row in rows]
    result = {
        **_run_identity(spec),
        "acc_matrix": acc_matrix,
        "init_acc": init["acc"],
        "acc_seen": metrics.accuracy_seen(acc_matrix).tolist(),
        "metrics": metrics.all_metrics(acc_matrix, init["acc"]),
    }
    diverged = next((row["diverged"] for row in rows if "diverged" in row), None)
    if diverged:
        # Its rows from that task on are NaN, and so is every metric that reads them; tables say "diverged".
        result["diverged"] = True
        result["diverged_at"] = diverged
        log.warning("%s diverged at task %d (step %d, loss %s)", result["run"], diverged["task"], diverged["step"],
                    diverged["loss"])
    bench = spec["benchmark_cfg"]
    disjoint_tasks = bench["scenario"] in ("class_incremental", "task_incremental") or (
        bench["scenario"] == "dataset_sequence" and bench.get("label_space", "disjoint") == "disjoint")
    if all("acc_task_il" in row for row in rows) and disjoint_tasks:
        # Task-IL differs from class-IL only where tasks hold different classes.
        task_il = [row["acc_task_il"] for row in rows]
        result["acc_matrix_task_il"] = task_il
        result["metrics"].update({f"{k}_task_il": v for k, v in metrics.all_metrics(task_il, init["acc_task_il"]).items()
                                  if k != "fwt"})
    if all("top5" in row for row in rows):
        result["acc_matrix_top5"] = [row["top5"] for row in rows]
    if bench["scenario"] == "dataset_sequence":
        # A dataset sequence is the MTIL protocol: each task a dataset, evaluated zero-shot before it is learned;
        # the ZSCL paper reports top-1 and top-5.
        result["metrics"].update(metrics.mtil_metrics(acc_matrix))
        if "acc_matrix_top5" in result:
            result["metrics"].update({f"{k}_top5": v for k, v in metrics.mtil_metrics(result["acc_matrix_top5"]).items()})
    if all("unseen_acc" in row for row in rows):
        result["unseen_acc"] = [row["unseen_acc"] for row in rows]
        result["metrics"]["unseen_acc"] = result["unseen_acc"][-1]
        result["metrics"]["unseen_drop"] = result["metrics"]["acc"] - result["unseen_acc"][-1]
    if all("retrieval" in row for row in rows):
        result["retrieval"] = [row["retrieval"] for row in rows]
        final = rows[-1]["retrieval"]
        for group in ("seen", "unseen"):
            for name, value in final.get(group, {}).items():
                result["metrics"][f"{name}_{group}"] = value
        if "p_at_1_drop" in final:
            result["metrics"]["p_at_1_drop"] = final["p_at_1_drop"]
    for key in sorted(k for k in rows[-1] if k.startswith("acc_") and k != "acc_task_il" and not k.endswith("_task_il")):
        result[f"acc_matrix_{key[4:]}"] = [row[key] for row in rows]
        result["metrics"][key] = metrics.average_accuracy(result[f"acc_matrix_{key[4:]}"])
    result["checkpoint_sha256"] = [verified_sha256(p)[0] for p in task_states]  # a corrupt one fails here
    result["provenance"] = provenance(spec, spec["seed"], rows[-1]["provenance"]["device"])
    write_json(out, result)
    log.info("%s: %s", result["run"], " ".join(f"{k}={v:.2f}" for k, v in result["metrics"].items()))


def _analysis_inputs(ctx: "_Context", tests: list, n_samples: int, rng) -> Any:
    """The fixed evaluation set of a benchmark: a seed-0 sample of all tasks' test sets (same for every run)."""
    import numpy as np
    import torch

    x_pool = torch.cat([d.x for d in tests])
    pick = np.sort(rng.choice(len(x_pool), size=min(n_samples, len(x_pool)), replace=False))
    return x_pool[torch.from_numpy(pick).to(x_pool.device)]


def _load_checkpoints(ctx: "_Context", states: list[str]) -> tuple[list[Any], dict[str, Any] | None]:
    """The models of a run's checkpoints, in task order, up to the task where the run diverged (if it did, with
    ``train.on_divergence: record``), and where it diverged (None if it did not)."""
    models = []
    for path in states:
        checkpoint = load_torch(path)
        if "diverged" in checkpoint:
            return models, checkpoint["diverged"]
        model = ctx.build_model()
        model.load_state_dict(checkpoint["model"])
        models.append(model.to(ctx.device).eval())
    return models, None


def _padded(values: list[float], n: int) -> list[float]:
    """``values`` of the tasks before a divergence, NaN for the rest of the ``n`` tasks."""
    return list(values) + [float("nan")] * (n - len(values))


def compare_runs(spec: dict[str, Any], other_spec: dict[str, Any], scenario_path: str, dataset_files: list[str],
                 states: list[str], other_states: list[str], out: str, threads: int = 1) -> None:
    """Cross-run CKA: two runs' checkpoints after the same task, on the benchmark's fixed evaluation set."""
    import numpy as np

    from clgrid.analysis.cka import cross_run_cka
    from clgrid.analysis.features import default_layers, layer_features

    if other_spec["backbone_cfg"] != spec["backbone_cfg"]:
        raise ValueError("cross-run CKA compares two runs of one backbone; got two backbone configs")
    ctx = _Context(spec, scenario_path, dataset_files, threads)  # one context: same scenario, data and architecture
    cfg = spec["analysis"]
    n_tasks = len(ctx.scenario["tasks"])
    if len(states) != n_tasks or len(other_states) != n_tasks:
        raise ValueError(f"expected one state per task ({n_tasks}) for each run, got {len(states)} and "
                         f"{len(other_states)}")
    tests = [ctx.task_data(i, "test") for i in range(n_tasks)]
    x_eval = _analysis_inputs(ctx, tests, cfg["n_samples"], np.random.default_rng(0))
    models, diverged = _load_checkpoints(ctx, states)
    other_models, other_diverged = _load_checkpoints(ctx, other_states)
    layers = cfg["layers"] or default_layers(models[0] if models else ctx.build_model())
    n_ok = min(len(models), len(other_models))  # tasks before either run diverged
    result = cross_run_cka([layer_features(m, x_eval, layers) for m in models[:n_ok]],
                           [layer_features(m, x_eval, layers) for m in other_models[:n_ok]], layers,
                           cfg["cka_batch_size"])
    result["per_layer"] = {layer: _padded(v, n_tasks) for layer, v in result["per_layer"].items()}
    nan_map = [[float("nan")] * len(layers) for _ in layers]
    result["layer_maps"] += [nan_map] * (n_tasks - n_ok)
    for layer in layers:
        log.info("CKA %s vs %s, %s, per task: %s", spec["method"], other_spec["method"], layer,
                 " ".join(f"{v:.3f}" for v in result["per_layer"][layer]))
    record = {
        **_run_identity(spec), "other": _run_identity(other_spec)["run"], "layers": layers,
        "n_eval_samples": int(len(x_eval)), "cka_per_layer": result["per_layer"], "cka_layer_maps": result["layer_maps"],
        "provenance": provenance({"a": spec, "b": other_spec}, spec["seed"], str(ctx.device)),
    }
    if diverged or other_diverged:
        record["diverged"] = {"run": diverged, "other": other_diverged}
    write_json(out, record)


def analyze_run(
    spec: dict[str, Any],
    scenario_path: str,
    dataset_files: list[str],
    states: list[str],
    task_evals: list[str],
    out: str,
    threads: int = 1,
) -> None:
    """CKA, RankMe and a linear probe over every checkpoint of one run.

    The evaluation set is fixed per benchmark (a seed-0 sample of all tasks' test
    sets), so every checkpoint, method and seed is measured on the same inputs.
    """
    import numpy as np
    import torch

    from clgrid import metrics
    from clgrid.analysis.cka import layer_cka_matrix
    from clgrid.analysis.features import default_layers, layer_features
    from clgrid.analysis.probe import fit_linear_probe
    from clgrid.analysis.rankme import rankme

    ctx = _Context(spec, scenario_path, dataset_files, threads)
    cfg = spec["analysis"]
    n_tasks = len(ctx.scenario["tasks"])
    if len(states) != n_tasks:
        raise ValueError(f"expected one state per task ({n_tasks}), got {len(states)}")
    rng = np.random.default_rng(0)
    tests = [ctx.task_data(i, "test") for i in range(n_tasks)]
    x_eval = _analysis_inputs(ctx, tests, cfg["n_samples"], rng)
    trains = [ctx.task_data(i, "train") for i in range(n_tasks)]

    models, diverged = _load_checkpoints(ctx, states)  # with a diverged run, the tasks before it: NaN after
    layers = cfg["layers"] or default_layers(models[0] if models else ctx.build_model())
    feats = [layer_features(m, x_eval, layers) for m in models]

    cka_to_first: dict[str, list[float]] = {layer: [] for layer in layers}
    layer_map = np.full((len(layers), len(layers)), np.nan)
    for t in range(len(models)):
        matrix = layer_cka_matrix(feats[0], feats[t], layers, cfg["cka_batch_size"])
        for i, layer in enumerate(layers):
            cka_to_first[layer].append(float(matrix[i, i]))
        layer_map = matrix
    if diverged:
        layer_map = np.full((len(layers), len(layers)), np.nan)
        cka_to_first = {layer: _padded(v, n_tasks) for layer, v in cka_to_first.items()}

    rankmes, probe_accs = [], []
    for t, model in enumerate(models):
        with torch.no_grad():
            rankmes.append(rankme(model.features(x_eval).flatten(1).cpu().numpy()))
            seen_x = torch.cat([d.x for d in trains[: t + 1]])
            seen_y = torch.cat([d.y for d in trains[: t + 1]])
            take = torch.from_numpy(
                np.sort(rng.choice(len(seen_y), size=min(cfg["probe_samples"], len(seen_y)), replace=False))
            )
            train_feats = model.features(seen_x[take.to(seen_x.device)]).flatten(1).cpu().numpy()
            take = take.to(seen_y.device)
            test_feats = [model.features(d.x).flatten(1).cpu().numpy() for d in tests[: t + 1]]
        probe = fit_linear_probe(train_feats, seen_y[take].cpu().numpy(), cfg["probe_c"], spec["seed"])
        # Mean of per-task accuracies, as A_t of the head, so the two compare.
        probe_accs.append(float(np.mean([
            100.0 * np.mean(probe(f) == d.y.cpu().numpy()) for f, d in zip(test_feats, tests[: t + 1])
        ])))
        log.info("after task %d: RankMe %.1f, probe %.1f%%, CKA to task 1 %s", t, rankmes[-1], probe_accs[-1],
                 " ".join(f"{l}={cka_to_first[l][t]:.2f}" for l in layers))

    acc_matrix = [read_json(p)["acc"] for p in task_evals]
    result = {
        **_run_identity(spec),
        "layers": layers,
        "n_eval_samples": int(len(x_eval)),
        "cka_to_first": cka_to_first,
        "cka_layers_first_last": layer_map.tolist(),
        "rankme": _padded(rankmes, n_tasks),
        "probe_acc": _padded(probe_accs, n_tasks),
        "head_acc": metrics.accuracy_seen(acc_matrix).tolist(),
        "provenance": provenance(spec, spec["seed"], str(ctx.device)),
    }
    if diverged:
        result["diverged"] = diverged
    write_json(out, result)
