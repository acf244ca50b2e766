"""What a job asks a scheduler for: GPUs, a time limit and memory, estimated from the config.

The estimates are limits, not predictions: SLURM kills a job that passes its ``runtime`` or ``mem_mb``,
so they err on the generous side (3× the expected time). Any of them can be overridden per rule
without touching the config: ``snakemake ... --set-resources train_task:runtime=600``.
Pure Python (no torch), since the Snakefile calls it while planning.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .catalog import archs
from .catalog import methods as method_catalog
from .config import datasets_of, in_grid, method_of, n_tasks
from .data.datasets import DATASETS

# Training-set sizes at default options (the registry's split), for the time estimate.
TRAIN_SIZE = {
    "digits": 1347, "mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000,
    "cifar10_1": 0, "cub200": 5994, "dtd": 3760, "flowers102": 2040, "eurosat": 21600, "food101": 75750,
    "stanford_cars": 8144, "oxford_pets": 3680, "sun397": 87003, "caltech101": 6941, "fgvc_aircraft": 6667,
    "imagenet": 1281167, "flowers17": 1088,
}
TEST_SIZE_FRACTION = 0.25  # test arrays are at most about this fraction of the train arrays (memory estimate)

# Per arch, its family declares (clgrid.catalog.archs) the CPU seconds per training sample per epoch (forward +
# backward) at 32×32 inputs on one core, measured order of magnitude, whether that grows with the pixels
# (convolutions) or not (models that resize to their own size), and its parameter count.
GPU_SPEEDUP = 20.0
SAFETY = 3.0  # limit = SAFETY × estimate
BASE_MEM_MB = 1500  # Python + torch + CUDA context
MIN_RUNTIME_MIN = 10  # start-up, evaluation and the checkpoint write


def gpu_visible() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch (the Snakefile plans with it)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and bool(os.listdir(gpus))


def wants_gpu(config: dict[str, Any], on_cluster: bool) -> bool:
    """device cuda → a GPU; device auto → a GPU on a cluster, or locally where one is visible; cpu → none."""
    device = config.get("device", "auto")
    if device.startswith("cuda"):
        return True
    return device == "auto" and (on_cluster or gpu_visible())


def _image_pixels(config: dict[str, Any], dataset: str) -> int:
    """Values per image; imported datasets that are not registered count as 3 x 64 x 64 unless image_size says."""
    info = DATASETS.get(dataset)
    options = config.get("datasets", {}).get(dataset, {})
    if info is not None and info.input_shape is not None and "image_size" not in options:
        channels, height, width = info.input_shape
        return channels * height * width
    side = options.get("image_size") or (info.default_image_size if info else None) or 64
    return options.get("channels", 3) * side * side


def _train_size(config: dict[str, Any], dataset: str) -> int:
    options = config.get("datasets", {}).get(dataset, {})
    size = TRAIN_SIZE.get(dataset, 50000)
    # An imported dataset that is not registered states its class count (n_classes) in its options.
    n_classes = DATASETS[dataset].n_classes if dataset in DATASETS else options.get("n_classes")
    if options.get("max_per_class_train") and n_classes:
        size = min(size, options["max_per_class_train"] * n_classes)
    return size


def task_train_samples(config: dict[str, Any], benchmark: str) -> float:
    """Training samples of one task: a class split's share, a whole dataset per domain task or dataset."""
    bench = config["benchmarks"][benchmark]
    sizes = [_train_size(config, d) for d in datasets_of(config, benchmark)]
    if bench["scenario"] == "dataset_sequence":
        return max(sizes)
    if bench["scenario"] in ("permuted", "rotated"):
        return sizes[0]
    return sizes[0] / n_tasks(config, benchmark)


def _task_samples(config: dict[str, Any], benchmark: str, method: str) -> float:
    """Samples one task's job trains on: its training samples, all seen for joint, twice that for the rest."""
    tasks = n_tasks(config, benchmark)
    per_task = task_train_samples(config, benchmark)
    if method_catalog.fact(method_of(config, method)[0], "trains_on_seen_tasks"):  # joint: all tasks so far
        return per_task * tasks
    return per_task * 2  # rehearsal and distillation methods process about one extra batch per step


def _arch(config: dict[str, Any], backbone: str) -> archs.Arch:
    return archs.get(config["backbones"][backbone].get("arch", "mlp"))


def _cost_seconds(config: dict[str, Any], benchmark: str, backbone: str, samples: float, epochs: float,
                  gpu: bool) -> float:
    arch = _arch(config, backbone)
    pixels = max(_image_pixels(config, d) for d in datasets_of(config, benchmark))
    scale = pixels / (3 * 32 * 32) if arch.cost_scales_with_pixels else 1.0
    seconds = samples * epochs * arch.cpu_seconds_per_sample * scale
    return seconds / GPU_SPEEDUP if gpu else seconds


def _mem_mb(config: dict[str, Any], benchmark: str, backbone: str) -> int:
    """Base + every dataset of the benchmark as uint8 in memory (plus its test split) + weights, grads and copies."""
    data_bytes = sum(_image_pixels(config, d) * _train_size(config, d) * (1 + TEST_SIZE_FRACTION)
                     for d in datasets_of(config, benchmark))
    model_bytes = _arch(config, backbone).parameters * 4 * 6  # weights, grads, momentum, teacher, ...
    mb = BASE_MEM_MB + 2 * (data_bytes + model_bytes) / 2**20
    return int(math.ceil(mb / 500) * 500)


def task_seconds(config: dict[str, Any], benchmark: str, backbone: str, method: str, gpu: bool) -> float:
    """Expected seconds of one task's training (no safety factor)."""
    train = {**config["benchmarks"][benchmark]["train"], **method_of(config, method)[2]}
    if train.get("iterations"):  # a fixed number of steps: samples seen = steps × batch size
        return _cost_seconds(config, benchmark, backbone, train["iterations"] * train["batch_size"], 1, gpu)
    return _cost_seconds(config, benchmark, backbone, _task_samples(config, benchmark, method),
                         train.get("epochs", 1), gpu)


def train_task(config: dict[str, Any], benchmark: str, backbone: str, method: str, on_cluster: bool,
               tasks: int = 1) -> dict[str, int]:
    """One training job of ``tasks`` consecutive tasks of a run: ``gpu`` (0/1), ``runtime`` (minutes), ``mem_mb``."""
    gpu = wants_gpu(config, on_cluster)
    seconds = tasks * task_seconds(config, benchmark, backbone, method, gpu)
    runtime = max(MIN_RUNTIME_MIN, int(math.ceil(SAFETY * seconds / 60)))
    return {"gpu": int(gpu), "runtime": runtime, "mem_mb": _mem_mb(config, benchmark, backbone)}


# A training job that would take less than this trains several tasks of its run: for small benchmarks the Python
# and torch start-up of a job (about 2 s) costs more than a task's training, while a rerun or a preemption of a
# job this short costs little.
AUTO_JOB_SECONDS = 600.0


def tasks_per_job(config: dict[str, Any], benchmark: str, on_cluster: bool) -> int:
    """How many consecutive tasks of a run one training job trains: the benchmark's ``tasks_per_job``, or for
    ``auto`` as many as fit in ``AUTO_JOB_SECONDS`` of expected training for the benchmark's slowest run (at
    least one)."""
    n = n_tasks(config, benchmark)
    chosen = config["benchmarks"][benchmark].get("tasks_per_job", "auto")
    if chosen != "auto":
        return max(1, min(int(chosen), n))
    gpu = wants_gpu(config, on_cluster)
    slowest = max((task_seconds(config, benchmark, backbone, method, gpu)
                   for backbone in config["backbones"] for method in config["methods"]
                   if in_grid(config, benchmark, backbone, method)), default=0.0)
    return max(1, min(n, int(AUTO_JOB_SECONDS // max(slowest, 1e-9))))


def task_chunks(config: dict[str, Any], benchmark: str, on_cluster: bool) -> list[tuple[int, int]]:
    """The (first, last) tasks of each training job of a run: ``tasks_per_job`` split into near-equal parts."""
    n = n_tasks(config, benchmark)
    per_job = tasks_per_job(config, benchmark, on_cluster)
    jobs = -(-n // per_job)
    bounds = [round(i * n / jobs) for i in range(jobs + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(jobs)]


def analysis(config: dict[str, Any], benchmark: str, backbone: str, on_cluster: bool) -> dict[str, int]:
    """A run's analyses: forward passes over every checkpoint (no training), CKA and probes on a subsample."""
    gpu = wants_gpu(config, on_cluster)
    samples = _train_size(config, datasets_of(config, benchmark)[0]) * n_tasks(config, benchmark) / 3
    seconds = _cost_seconds(config, benchmark, backbone, samples, 1, gpu)
    runtime = max(MIN_RUNTIME_MIN, int(math.ceil(SAFETY * seconds / 60)))
    return {"gpu": int(gpu), "runtime": runtime, "mem_mb": _mem_mb(config, benchmark, backbone)}


def init_or_eval(config: dict[str, Any], benchmark: str, backbone: str, on_cluster: bool) -> dict[str, int]:
    """Initial weights and their accuracy on every task: one evaluation pass."""
    return {"gpu": int(wants_gpu(config, on_cluster)), "runtime": MIN_RUNTIME_MIN,
            "mem_mb": _mem_mb(config, benchmark, backbone)}
