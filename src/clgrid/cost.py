"""What each result cost: per run and task, the jobs' wall, CPU and GPU seconds and peak memory (Snakemake's
``benchmark:`` files), the samples trained on, forward+backward FLOPs and the checkpoint's bytes.

``cost_rows(run_dirs, specs)`` reads the files a finished run left (nothing is rerun); ``write_cost_tables``
writes ``cost.csv`` (a row per run and job part) and ``cost.md`` (per benchmark × backbone × method, the mean over
seeds of each run's total beside its final ACC). The rows of one run:

- ``task`` = t: the training job of task t. A job that trained several tasks (``tasks_per_job``) wrote one
  benchmark file for them all, ``train_tasks{a}to{b}.bench.tsv``; its seconds are split evenly over its tasks.
- ``task`` = ``init``: the initial model (``init_model``) and its evaluation (``evaluate_init``). They are shared by
  every method of the seed, and counted in full in each run: a run's total is what it costs on its own.
- ``task`` = ``metrics``: the run's metrics job.

FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over one forward (cross-entropy)
and backward pass of the run's model (built from the spec as the train job builds it, with the method's frozen
parameters frozen) on one batch of the benchmark's batch size, divided by the batch size and multiplied by the
samples trained on; evaluation FLOPs are one forward pass per evaluated sample. One measurement per benchmark ×
backbone × method (not per seed: the seed changes no shape). What is not counted: a method's own extra compute
(replay's extra batch, distillation's teacher forward, EWC's penalty, iCaRL's exemplars, OGD's projections),
measurements during a task (``train.eval_every_iters``) and the feature cache's extraction.

CPU seconds and peak memory come from the process Snakemake measured. A job the warm worker ran
(``clgrid.worker``) is measured as its client, a process of 10-18 MB that waits (below ``CLIENT_RSS_MB``): its own
numbers are then the usage line the worker's child writes at the end of its log (``worker_usage``). A job with
neither (shorter than Snakemake's first sample, in its own process) leaves the two columns empty (NaN). Wall seconds
are right either way (the client waits for the job).

Torch-free at import (the Snakefile imports :func:`cost_specs`); torch only in :func:`flops_per_sample`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger("clgrid")

COLUMNS = ("stage", "benchmark", "backbone", "method", "seed", "task", "wall_s", "cpu_s", "gpu_s", "max_rss_mb",
           "samples", "flops_train", "flops_eval", "checkpoint_bytes")
SUMMED = ("wall_s", "cpu_s", "gpu_s", "samples", "flops_train", "flops_eval", "checkpoint_bytes")
CLIENT_RSS_MB = 25.0
"""Below this peak the benchmark did not measure the job: the warm worker's client (a waiting process of 10-18 MB
in the default grid) or, for a job shorter than Snakemake's first sample, a shell (0-3 MB). A job that ran in its
own process is at least an interpreter with numpy (the metrics job: 34-39 MB; a torch job: 500-700 MB)."""
GPU_DEVICES = ("cuda", "mps")
CHUNK_BENCH = re.compile(r"train_tasks(\d+)to(\d+)\.bench\.tsv$")


# -- benchmark files --------------------------------------------------------------------------------------------

def read_bench(path: str | os.PathLike) -> dict[str, float]:
    """One Snakemake benchmark file: wall seconds (``s``), CPU seconds (``cpu_time``) and peak RSS in MB
    (``max_rss``); several rows (``benchmark: repeat(...)``) give the mean seconds and the largest peak. "NA"
    (psutil could not read the process) is NaN. CPU and memory are NaN for a job measured as the warm worker's
    client (peak below ``CLIENT_RSS_MB``)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError(f"'{path}' is not a Snakemake benchmark file (a tab-separated header with 's', "
                         "'max_rss', 'cpu_time')")

    def numbers(key: str) -> list[float]:
        return [float(row[key]) if row.get(key) not in (None, "", "NA", "-") else math.nan for row in rows]

    rss = max(numbers("max_rss"), key=lambda v: -math.inf if math.isnan(v) else v)
    measured = not math.isnan(rss) and rss >= CLIENT_RSS_MB
    if not measured:  # the warm worker's client: the job's own numbers are the last line of its log, if any
        usage = worker_usage(Path(str(path)[: -len(".bench.tsv")] + ".log")) if str(path).endswith(".bench.tsv") \
            else None
        if usage:
            return {"wall_s": _mean(numbers("s")), **usage}
    return {"wall_s": _mean(numbers("s")), "cpu_s": _mean(numbers("cpu_time")) if measured else math.nan,
            "max_rss_mb": rss if measured else math.nan}


def worker_usage(log: Path) -> dict[str, float] | None:
    """The CPU seconds and peak memory a job run by the warm worker reported at its end (``clgrid.worker.server``'s
    usage line in the job's log), or None (no log, or a job run in its own process)."""
    from clgrid.worker import USAGE_PREFIX

    found = _last_match(log, re.compile("^" + re.escape(USAGE_PREFIX)))
    if found is None:
        return None
    line = found.string
    fields = dict(part.split("=", 1) for part in line[len(USAGE_PREFIX):].split())
    return {"cpu_s": float(fields["cpu_s"]), "max_rss_mb": float(fields["max_rss_mb"])}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def is_gpu(device: str | None) -> bool:
    """Whether a provenance ``device`` ("cpu", "cuda", "cuda:1", "mps") is a GPU."""
    return bool(device) and str(device).split(":")[0] in GPU_DEVICES


def _record(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _device(record: Mapping[str, Any]) -> str | None:
    return record.get("provenance", {}).get("device")


def train_benches(run_dir: Path, tasks: Iterable[int]) -> dict[int, tuple[Path, int]]:
    """Each task's training benchmark file and the number of tasks it covers (1, or a group's size). Where a
    task has both (``tasks_per_job`` changed since), the newer file is the job that wrote its state."""
    candidates: dict[int, list[tuple[Path, int]]] = {}
    for path in run_dir.glob("train_tasks*to*.bench.tsv"):
        match = CHUNK_BENCH.search(path.name)
        if match:
            first, last = int(match[1]), int(match[2])
            for t in range(first, last + 1):
                candidates.setdefault(t, []).append((path, last - first + 1))
    out = {}
    for t in tasks:
        own = run_dir / f"task{t}" / "train.bench.tsv"
        found = candidates.get(t, []) + ([(own, 1)] if own.exists() else [])
        if found:
            out[t] = max(found, key=lambda item: item[0].stat().st_mtime_ns)
    return out


# -- samples ----------------------------------------------------------------------------------------------------

def split_sizes(scenario: Mapping[str, Any], dataset_counts: Mapping[str, Mapping[str, list[int]]]) -> list[dict]:
    """Per task, the samples of its ``train``, ``test`` and ``val`` splits: an index list's length, or the whole
    split of its dataset where the scenario gives None (permuted, rotated). ``dataset_counts``: dataset -> its
    ``results/data/<dataset>.json`` counts ({"train": per class, "test": per class})."""
    sizes = []
    for task in scenario["tasks"]:
        size = {}
        for split in ("train", "test", "val"):
            idx = task.get(f"{split}_idx")
            if idx is not None:
                size[split] = len(idx)
            elif split == "val":
                size[split] = 0
            else:
                size[split] = sum(dataset_counts[task["dataset"]][split])
        sizes.append(size)
    return sizes


def extra_eval_samples(scenario: Mapping[str, Any]) -> int:
    """Test samples evaluated besides the tasks': held-out classes and evaluation-only sets."""
    n = len((scenario.get("holdout") or {}).get("test_idx") or [])
    for eval_set in (scenario.get("eval_sets") or {}).values():
        n += sum(len(part.get("test_idx") or []) for part in eval_set["tasks"])
    return n


def samples_trained(n: int, train: Mapping[str, Any]) -> int:
    """Samples a task's ``n`` training samples put through ``train.epochs`` epochs (or ``train.iterations``
    steps of ``batch_size``, the last epoch cut short) at ``batch_size``: what ``clgrid.train.fit_task`` runs."""
    if n == 0:
        return 0
    iterations = train.get("iterations")
    if not iterations:
        return n * int(train["epochs"])
    batch = int(train["batch_size"])
    full, rest = divmod(int(iterations), -(-n // batch))
    return full * n + min(rest * batch, n)


def task_samples(sizes: list[dict], task: int, train: Mapping[str, Any], seen_tasks: bool,
                 diverged: Mapping[str, Any] | None = None, logged: int | None = None) -> int:
    """Samples trained in task ``task``: its own training split, or every task's so far for a method that
    trains on seen tasks (joint); ``logged``, where the task's log says how many training samples the method used
    (``logged_training_samples``: GDumb's memory, iCaRL's exemplars with the new data), instead. A run that
    diverged (its evaluation's ``diverged``) trained that task up to the step that diverged and no task after it."""
    n = sum(s["train"] for s in sizes[: task + 1]) if seen_tasks else sizes[task]["train"]
    n = n if logged is None else logged
    if diverged and diverged["task"] < task:
        return 0
    if diverged and diverged["task"] == task:
        train = {**train, "iterations": int(diverged["step"])}
    return samples_trained(n, train)


def eval_samples(sizes: list[dict], extra: int, evaluate_on: str | None) -> int:
    """Samples one evaluation runs the model on: every task's test split (and validation split beside it), or
    only the validation splits for a selection candidate (``evaluate_on: validation``)."""
    val = sum(s["val"] for s in sizes)
    return val if evaluate_on == "validation" else sum(s["test"] for s in sizes) + val + extra


# -- FLOPs ------------------------------------------------------------------------------------------------------

def flops_per_sample(spec: Mapping[str, Any], scenario: Mapping[str, Any]) -> tuple[float, float]:
    """(training FLOPs per sample: forward, cross-entropy and backward; evaluation FLOPs per sample: forward)
    of the run's model, counted with ``FlopCounterMode`` on one batch of ``train.batch_size``.

    The model is built as the train job builds it (``clgrid.context.JobContext.build_model``, no weights read)
    and the method is constructed over it, so what the method freezes has no weight gradients. A run on a frozen
    backbone's cached features (``feature_cache``) runs only the head. The batch runs on torch's meta device
    (shapes only, no arithmetic: the count is the same, a ResNet-18 step takes 1 s instead of 20), or on the CPU
    where an operation has no meta kernel."""
    try:
        return _count(spec, scenario, "meta")
    except (NotImplementedError, RuntimeError, TypeError, ValueError) as err:
        log.info("counting %s's FLOPs on the CPU (the meta device could not: %s)", spec.get("method_name"), err)
        return _count(spec, scenario, "cpu")


def _count(spec: Mapping[str, Any], scenario: Mapping[str, Any], device: str) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from clgrid.context import scenario_dataset
    from clgrid.methods import get_method
    from clgrid.models import build_model
    from clgrid.models.feature_cache import head_only
    from clgrid.throughput import random_batches

    torch.manual_seed(0)
    n_classes = scenario["n_classes"]
    model = build_model(spec["backbone_cfg"], scenario["input_shape"], n_classes,
                        input_norm=scenario.get("input_norm"), class_names=scenario.get("class_names"),
                        load_weights=False, dataset=scenario_dataset(scenario))
    get_method(spec["method_name"])(model, dict(spec.get("method_params") or {}), n_classes, inputs_device="cpu")
    model.to(device)
    batch = int(spec["train"]["batch_size"])
    x, y = random_batches(scenario["input_shape"], n_classes, batch, torch.device(device))
    if spec.get("feature_cache"):
        with torch.no_grad():
            model.eval()
            x = model.backbone(model.preprocess(x)).detach()
    with head_only(model) if spec.get("feature_cache") else contextlib.nullcontext():
        model.train()
        with FlopCounterMode(display=False) as train_counter:
            F.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)
        model.eval()
        with torch.inference_mode(), FlopCounterMode(display=False) as eval_counter:
            model(x)
    return train_counter.get_total_flops() / batch, eval_counter.get_total_flops() / batch


# -- rows -------------------------------------------------------------------------------------------------------

def run_parts(run_dir: str | os.PathLike) -> tuple[str, str, str, int, Path]:
    """(benchmark, backbone, method, seed, results root) of ``.../results/runs/<b>/<bb>/<m>/s<seed>``, or of a
    file in it (its metrics.json)."""
    path = Path(run_dir)
    if path.suffix:
        path = path.parent
    benchmark, backbone, method, seed = path.parts[-4:]
    if path.parts[-6:-4] != ("results", "runs") or not seed.startswith("s"):
        raise ValueError(f"'{run_dir}' is not a run folder results/runs/<benchmark>/<backbone>/<method>/s<seed>")
    return benchmark, backbone, method, int(seed[1:]), path.parents[5]


def group_key(benchmark: str, backbone: str, method: str) -> str:
    return f"{benchmark}/{backbone}/{method}"


def cost_specs(config: Mapping[str, Any], runs: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """What ``cost_rows`` needs of each benchmark × backbone × method of ``runs`` (``clgrid.config.Run``): the
    run spec's backbone, method, training settings, feature cache and evaluation split (no seed, no benchmark
    config: the scenario file has its tasks). Torch-free; the cost rule passes it as JSON."""
    from clgrid import config as cl

    keep = ("backbone_cfg", "method_name", "method_params", "train", "feature_cache", "evaluate_on")
    specs = {}
    for run in runs:
        key = group_key(run.benchmark, run.backbone, run.method)
        if key not in specs:
            spec = cl.run_spec(config, run.benchmark, run.backbone, run.method, run.seed)
            specs[key] = {k: spec[k] for k in keep if spec.get(k) is not None}
    return specs


def logged_training_samples(task_log: Path, task: int) -> int | None:
    """The training samples a task's job gave the method (``clgrid.fit``'s "task t: N training samples" line in
    the task's log), or None where the log is missing."""
    found = _last_match(task_log, re.compile(rf" task {task}: (\d+) training samples"))
    return None if found is None else int(found.group(1))


def _last_match(log: Path, pattern: re.Pattern) -> re.Match | None:
    """The last line of ``log`` that ``pattern`` finds something in (its match), or None (no such line, no log)."""
    if not log.exists():
        return None
    found = None
    with open(log, errors="replace") as f:
        for line in f:
            match = pattern.search(line)
            if match:
                found = match
    return found


def cost_rows(run_dirs: Iterable[str | os.PathLike], specs: Mapping[str, Mapping[str, Any]], stage: str = "final",
              flops: dict[str, tuple[float, float]] | None = None) -> list[dict[str, Any]]:
    """The cost rows of finished runs (their folders, or their metrics.json): the tasks whose state exists, then
    ``init`` and ``metrics``. ``specs``: ``cost_specs`` of them; ``stage``: final, or selection for a selection's
    candidates (reported apart). ``flops``: a cache of ``flops_per_sample`` by benchmark/backbone/method, filled
    here (pass one dict to several calls to measure each once)."""
    from clgrid import paths
    from clgrid.catalog import methods as method_catalog

    flops = {} if flops is None else flops
    scenarios: dict[tuple, tuple[dict, list, dict]] = {}  # (root, benchmark) -> what its scenario gives every run
    rows = []
    for run_dir in run_dirs:
        benchmark, backbone, method, seed, root = run_parts(run_dir)
        key = group_key(benchmark, backbone, method)
        if key not in specs:
            raise KeyError(f"no spec for '{key}' (cost_specs of the runs): its samples and FLOPs are unknown")
        spec = specs[key]
        folder = root / paths.RUN_METRICS.format(benchmark=benchmark, backbone=backbone, method=method,
                                                 seed=seed).rsplit("/", 1)[0]
        if (root, benchmark) not in scenarios:
            scenario = json.loads((root / paths.SCENARIO.format(benchmark=benchmark)).read_text())
            counts = {d: json.loads((root / paths.DATASET_META.format(dataset=d)).read_text())["counts"]
                      for d in {t["dataset"] for t in scenario["tasks"]}}
            scenarios[root, benchmark] = scenario, split_sizes(scenario, counts), extra_eval_samples(scenario)
        scenario, sizes, extra = scenarios[root, benchmark]
        n_eval = eval_samples(sizes, extra, spec.get("evaluate_on"))
        if key not in flops:
            try:
                flops[key] = flops_per_sample(spec, scenario)
            except Exception as err:  # noqa: BLE001 - a model the count cannot build must not fail the grid's tables
                log.warning("FLOPs of %s not counted (left empty): %s: %s", key, type(err).__name__, err)
                flops[key] = (math.nan, math.nan)
        train_flops, eval_flops = flops[key]
        seen = bool(method_catalog.fact(spec["method_name"], "trains_on_seen_tasks"))
        base = {"stage": stage, "benchmark": benchmark, "backbone": backbone, "method": method, "seed": seed}
        tasks = [t for t in range(len(sizes)) if (folder / f"task{t}" / "state.pt").exists()]
        benches = train_benches(folder, tasks)
        for t in tasks:
            bench, shared = benches.get(t, (None, 1))
            adopted = folder / f"task{t}" / "adopt.bench.tsv"  # a per-task final run: the chosen state, not trained
            if adopted.exists():
                bench, shared = adopted, 1
            job = read_bench(bench) if bench else {"wall_s": math.nan, "cpu_s": math.nan, "max_rss_mb": math.nan}
            job = {k: (v / shared if k != "max_rss_mb" else v) for k, v in job.items()}
            record = _record(folder / f"task{t}" / "eval.json")
            samples = 0 if adopted.exists() else task_samples(
                sizes, t, spec["train"], seen, record.get("diverged"),
                logged_training_samples(folder / f"task{t}" / "train.log", t))
            rows.append({**base, "task": t, **job, "gpu_s": _gpu(job, _device(record)), "samples": samples,
                         "flops_train": train_flops * samples,
                         "flops_eval": 0.0 if "diverged" in record else eval_flops * n_eval,  # not evaluated
                         "checkpoint_bytes": os.path.getsize(folder / f"task{t}" / "state.pt")})
        init_dir = root / os.path.dirname(paths.INIT_EVAL.format(benchmark=benchmark, backbone=backbone, seed=seed))
        init_jobs = [read_bench(p) for p in (init_dir / "init.bench.tsv", init_dir / "eval.bench.tsv") if p.exists()]
        init = _combine(init_jobs)
        rows.append({**base, "task": "init", **init, "gpu_s": _gpu(init, _device(_record(init_dir / "eval.json"))),
                     "samples": 0, "flops_train": 0.0, "flops_eval": eval_flops * n_eval if init_jobs else 0.0,
                     "checkpoint_bytes": _size(init_dir / "model.pt")})
        metrics = _combine([read_bench(p) for p in [folder / "metrics.bench.tsv"] if p.exists()])
        rows.append({**base, "task": "metrics", **metrics, "gpu_s": 0.0, "samples": 0, "flops_train": 0.0,
                     "flops_eval": 0.0, "checkpoint_bytes": 0})
    return rows


def _gpu(job: Mapping[str, float], device: str | None) -> float:
    return job["wall_s"] if is_gpu(device) else 0.0


def _combine(jobs: list[dict[str, float]]) -> dict[str, float]:
    """Jobs one after another: seconds add up, the peak is the largest (NaN where any is unmeasured)."""
    if not jobs:
        return {"wall_s": math.nan, "cpu_s": math.nan, "max_rss_mb": math.nan}
    return {"wall_s": sum(j["wall_s"] for j in jobs), "cpu_s": sum(j["cpu_s"] for j in jobs),
            "max_rss_mb": max(j["max_rss_mb"] for j in jobs) if not any(math.isnan(j["max_rss_mb"]) for j in jobs)
            else math.nan}


def _size(path: Path) -> int:
    return os.path.getsize(path) if path.exists() else 0
