"""``clgrid doctor``: a self-check of clgrid's training path on one device, in a few minutes, before a big study.

Run it on a new GPU node, after a torch / CUDA / driver upgrade, or before submitting hundreds of jobs. Every check
goes through the same job functions the Snakemake rules call (``clgrid.jobs``, via ``clgrid.inprocess.run_cell``),
on a tiny continual-learning problem built in code (scikit-learn's bundled 8x8 digits in 2 tasks of 5 classes,
1 epoch each; no download) and validated with the workflow's schema:

- **methods**: every registered method, under each precision (default: the device's own, bf16 on a recent GPU, and
  fp32) and each data placement (inputs on the device, or in host memory streamed by a DataLoader). Each run must
  finish, give finite accuracies, and its final average accuracy (ACC, class-IL) must lie within ``tolerance``
  points of the same method's fp32 run with data on the device (the reference row).
- **feature cache**: a frozen backbone (``freeze: all``) trained on the cached features of ``extract_features``
  against the same run through the backbone: final accuracies within ``CACHE_TOLERANCE`` points per task.
- **resume**: with ``train.deterministic: true``, a task interrupted right after an in-job checkpoint and resumed
  must save the same state as the uninterrupted task, every tensor bit for bit.
- **throughput**: ResNet-18 (CIFAR stem) at 32 px through clgrid's training loop, in images/s, under fp32, bf16,
  bf16 + channels_last and bf16 + torch.compile, with the FLOPs of a training step counted by
  ``FlopCounterMode``, the achieved TFLOP/s and their fraction of the GPU's dense bf16 peak.

It prints one Markdown table (a row per check: ok / FAIL / skip, its numbers, the first line of the error) and
exits 1 if any check failed. Without CUDA, ``--device cuda`` (the default) says so in one line and exits 0;
``--device cpu`` runs the same suite on the CPU (how the tests check the doctor itself).

Checks run in fresh processes (one per group; ``--no-isolate`` runs them in this one): process-wide settings
(deterministic kernels, cuBLAS workspace, cuDNN autotuning) are then set as in a real job, and a CUDA error that
poisons its process (a device-side assert) costs only the rest of its group, which is restarted without the
method that broke it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH = "split_digits"
N_TASKS = 2
SEED = 0
TOLERANCE = 10.0
"""Points of final ACC a run may differ from its method's fp32 / device run (the reference row).

On this tiny problem (1 epoch, 2 tasks, one seed) a change of arithmetic changes the trajectory, and ACC moves by
up to a few points between seeds (see the README); 10 points is far outside that and is what a broken path gives
(no learning, skipped fp16 steps, a head or buffer in the wrong dtype). It catches breakage, not small biases."""
CACHE_TOLERANCE = 1.0
"""Points any task's final accuracy may differ between a frozen-backbone run on cached features and the same run
through the backbone (the bound tests/models/test_feature_cache.py asserts: the two differ by float rounding)."""
CACHE_METHODS = ("naive", "replay")
RESUME_METHODS = ("naive", "si", "derpp")
RESUME_EPOCHS = 2

BACKBONES: dict[str, dict[str, Any]] = {
    # BatchNorm and two Conv2d layers: channels_last (auto on CUDA), cuDNN and autocast's conv/BN rules all run.
    "cnn": {"arch": "cnn", "channels": [8, 16], "batch_norm": True},
    # LoRA adapts the backbone's nn.Linear layers (a conv backbone has none).
    "mlp": {"arch": "mlp", "hidden": [64, 64]},
    # A tiny random open_clip CLIP (no download): ZSCL needs CLIP's text encoder.
    "clip": {"arch": "clip", "model": "ViT-Doctor-Tiny", "pretrained": None},
}
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8,
                            "mlp_ratio": 2.0},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
METHOD_BACKBONE = {"lora": "mlp"}
"""The smallest backbone that exercises each method: the CNN unless listed here; CLIP for methods that need it."""
TRAIN = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 8}
"""One epoch of batch 8 is ~84 steps per task: the CNN learns each task to 92-99 % in fp32 (batch 32 left it
at 53-92 % depending on the seed, too unsettled to compare precisions)."""
METHOD_TRAIN = {"zscl": {"optimizer": "adam", "lr": 3e-4}}
"""Training overrides (a variant ``<method>_doctor``): the tiny random CLIP hardly moves under SGD in one epoch."""
METHOD_PARAMS = {"ogd": {"ogd_samples": 20}, "zscl": {"reference_size": 64, "reference_batch_size": 16}}
"""Smaller settings where a method's defaults cost far more than the rest of the suite (OGD's Gram-Schmidt over 200
samples, ZSCL's 1000 reference images)."""

THROUGHPUT_GPU = {"batch": 256, "steps": 50, "warmup": 10}
THROUGHPUT_CPU = {"batch": 16, "steps": 2, "warmup": 1}

log = logging.getLogger("clgrid.doctor")


# --- rows ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One check's result: ``status`` ok, FAIL or skip; ``numbers`` what it measured; ``error`` the first line of
    what went wrong (with the deepest clgrid frame), ``detail`` the whole traceback (JSON only)."""

    check: str
    setting: str
    status: str = "ok"
    numbers: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    detail: str = ""
    seconds: float = 0.0
    key: dict[str, Any] = field(default_factory=dict)

    def fail(self, error: str, detail: str = "") -> "Row":
        self.status, self.error, self.detail = "FAIL", error, detail or self.detail
        return self


def first_error_line(err: BaseException) -> str:
    """``Type: first line of the message [at clgrid/file.py:line in function]``, the deepest frame inside clgrid."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    message = lines[0].strip() if lines else ""
    message = message if len(message) <= 240 else message[:239] + "…"  # the traceback in the JSON has it all
    text = f"{type(err).__name__}: {message}".rstrip(": ")
    package = str(Path(__file__).resolve().parent)
    where = None
    for frame in traceback.extract_tb(err.__traceback__):
        if frame.filename.startswith(package) and not frame.filename.endswith("doctor.py"):
            where = frame
    if where is not None:
        text += f" [at clgrid/{Path(where.filename).relative_to(package)}:{where.lineno} in {where.name}]"
    return text


def _attempt(row: Row, work: Callable[[Row], None]) -> Row:
    """Run one check into ``row``; any exception becomes a FAIL row (the suite goes on)."""
    start = time.perf_counter()
    try:
        work(row)
    except Exception as err:  # noqa: BLE001 - every failure is a result of the check
        row.fail(first_error_line(err), traceback.format_exc())
    row.seconds = round(time.perf_counter() - start, 2)
    _progress(f"{row.check:<10} {row.setting:<40} {row.status:<4} {row.seconds:6.1f} s"
              + (f"  {row.error}" if row.error else ""))
    return row


def _progress(message: str) -> None:
    print(f"[doctor] {message}", file=sys.stderr, flush=True)


# --- the tiny problem -------------------------------------------------------------------------------------------


def find_schema(explicit: str | None = None) -> Path:
    """The workflow's config schema: ``explicit``, else the checkout this package was installed from (editable
    install: ``src/clgrid`` -> ``workflow/schemas``), else the current directory's."""
    candidates = [Path(explicit)] if explicit else [
        Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml",
        Path.cwd() / "workflow" / "schemas" / "config.schema.yaml",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no config schema at {' or '.join(str(p) for p in candidates)}: run the doctor from a "
                            "clgrid checkout, or pass --schema workflow/schemas/config.schema.yaml")


def write_tiny_clip(workdir: Path) -> Path:
    """The tiny CLIP's open_clip config file (the model is random; nothing is downloaded)."""
    path = workdir / f"{BACKBONES['clip']['model']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_CLIP))
    return path


def run_name(method: str) -> str:
    """The run that checks ``method``: the method itself, or its variant with the doctor's training overrides."""
    return f"{method}_doctor" if method in METHOD_TRAIN else method


def backbone_of(method: str) -> str:
    from clgrid.methods import METHODS

    if getattr(METHODS.get(method), "needs_clip", False):
        return "clip"
    return METHOD_BACKBONE.get(method, "cnn")


def suite_config(device: str, precision: str, schema: Path, workdir: Path, methods: list[str], backbone: str,
                 epochs: int = 1, deterministic: bool = False) -> dict[str, Any]:
    """The doctor's grid on ``backbone`` (the methods of ``methods`` that run on it, and the feature cache's frozen
    variants on the CNN), validated (defaults filled) with the workflow's schema and checks, as Snakemake would: a
    config a user could write and plan, so the plan-time checks hold for it as for theirs."""
    from clgrid.config_errors import check

    train = {**TRAIN, "epochs": epochs, "precision": precision}
    if deterministic:
        train["deterministic"] = True
    backbone_cfg = BACKBONES[backbone]
    if backbone == "clip":
        backbone_cfg = {**backbone_cfg, "model_config": str(write_tiny_clip(workdir))}
    here = sorted(m for m in set(methods) | ({*CACHE_METHODS} if backbone == "cnn" else set())
                  if backbone_of(m) == backbone)
    variants = {f"{m}_frozen": {"method": m, "params": {"freeze": "all"}} for m in CACHE_METHODS
                if backbone == "cnn"}
    variants.update({run_name(m): {"method": m, "train": METHOD_TRAIN[m]} for m in METHOD_TRAIN if m in here})
    config = {
        "device": device,
        "seeds": [SEED, SEED + 1],
        "benchmarks": {BENCH: {"dataset": "digits", "scenario": "class_incremental", "n_tasks": N_TASKS,
                               "class_order": "sorted", "train": train}},
        "backbones": {backbone: backbone_cfg},
        "methods": sorted(set(here) - set(METHOD_TRAIN)) + sorted(variants),
        "method_params": copy.deepcopy(METHOD_PARAMS),
        "variants": variants,
    }
    return check(config, schema)


def _prepare(config: dict[str, Any], root: Path, backbone: str) -> tuple[list[str], str, str]:
    """Dataset, scenario and initial weights in ``root`` (the DAG's first jobs); returns their paths."""
    from clgrid import config as cl
    from clgrid import jobs

    data = root / "data" / "digits.npz"
    if not data.exists():
        jobs.prepare_dataset(cl.dataset_spec(config, "digits"), str(data))
    scenario = root / "scenarios" / f"{BENCH}.json"
    if not scenario.exists():
        jobs.prepare_scenario(cl.scenario_spec(config, BENCH), [str(data)], str(scenario))
    init = root / "init" / BENCH / backbone / f"s{SEED}" / "model.pt"
    if not init.exists():
        jobs.init_model(cl.init_spec(config, BENCH, backbone, SEED), str(scenario), str(init))
    return [str(data)], str(scenario), str(init)


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


# --- the checks: each group returns its rows ---------------------------------------------------------------------


@dataclass
class Options:
    device: str
    precisions: list[str]
    placements: list[str]
    methods: list[str]
    checks: list[str]
    workdir: str
    schema: str
    tolerance: float = TOLERANCE
    throughput: dict[str, int] = field(default_factory=dict)
    cpu_compile: bool = False
    workers: int = 2
    verbose: bool = False
    start_method: str | None = None  # multiprocessing's default in the command's process, set again in each group's


def method_group(opts: Options, precision: str, placement: str, methods: list[str]) -> list[Row]:
    """Every method in ``methods``: 2 tasks x 1 epoch under ``precision`` with inputs placed at ``placement``. The
    reference group (fp32 at the first placement) also trains each method with seed 1: how far the seed alone moves
    its ACC widens that method's tolerance (``judge``)."""
    from clgrid.inprocess import run_cell

    root = _fresh(Path(opts.workdir) / f"methods-{precision}-{placement}")
    reference_group = precision == "fp32" and placement == opts.placements[0]
    rows = []
    for method in methods:
        backbone = backbone_of(method)
        row = Row("method", f"{method} · {precision} · {placement} · {backbone}",
                  key={"method": method, "precision": precision, "placement": placement, "backbone": backbone})

        def work(row: Row, method=method, backbone=backbone) -> None:
            config = suite_config(opts.device, precision, Path(opts.schema), root, opts.methods, backbone)
            before = _children()
            metrics = run_cell(config, BENCH, backbone, run_name(method), SEED, root, placement=placement,
                               workers=opts.workers, checkpoint_every_s=None)
            leaked = _reap(before)
            matrix = metrics["acc_matrix"]
            row.numbers = {"acc": metrics["metrics"]["acc"], "last_task": matrix[-1][-1],
                           "acc_task_il": metrics["metrics"].get("acc_task_il"), "acc_matrix": matrix}
            if not _finite([v for r in matrix for v in r]):
                row.fail(f"non-finite accuracies {matrix}")
            elif leaked:
                row.numbers["leaked_workers"] = leaked
                row.fail(f"{leaked} DataLoader worker processes still alive after the run returned ({N_TASKS} "
                         "tasks): each task's loader leaks its persistent workers (collecting one blocks ~5 s)")
            if reference_group:
                other = run_cell(config, BENCH, backbone, run_name(method), SEED + 1, root, placement=placement,
                                 workers=opts.workers, checkpoint_every_s=None)
                _reap(before)
                row.numbers["acc_seed1"] = other["metrics"]["acc"]

        rows.append(_attempt(row, work))
        if row.status == "FAIL" and not _device_healthy(opts.device):
            row.error += " (the CUDA context is broken; the group restarts in a new process)"
            break
    return rows


def _fresh(folder: Path) -> Path:
    """``folder``, emptied: a check never reads what an earlier doctor run left in a reused ``--workdir``."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _children() -> set[int]:
    import multiprocessing

    return {p.pid for p in multiprocessing.active_children()}


def _reap(before: set[int]) -> int:
    """Child processes started since ``before`` that are still alive (a run's DataLoader workers should be gone once
    its job returned): terminated here so later checks do not pay for them; returns how many there were."""
    import gc
    import multiprocessing

    deadline = time.monotonic() + 1.0  # a loader shut down properly has joined its workers already
    while True:
        alive = [p for p in multiprocessing.active_children() if p.pid not in before]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for p in alive:
        p.terminate()
    for p in alive:
        p.join(5)
    if alive:
        gc.collect()  # the leaked loaders' iterators, now without workers to wait for
    return len(alive)


def _device_healthy(device: str) -> bool:
    """False when a CUDA error left this process's context unusable (every later CUDA call would fail)."""
    if not device.startswith("cuda"):
        return True
    import torch

    try:
        torch.cuda.synchronize()
        torch.zeros(1, device=device).add_(1).item()
        return True
    except Exception:  # noqa: BLE001
        return False


def cache_group(opts: Options, precision: str) -> list[Row]:
    """A frozen-backbone run on cached features against the same run through the backbone, per ``CACHE_METHODS``."""
    from clgrid.inprocess import run_cell
    from clgrid.io import load_torch

    for cached in ("on", "off"):
        _fresh(Path(opts.workdir) / f"cache-{precision}-{cached}")
    rows = []
    for method in [m for m in CACHE_METHODS if m in opts.methods] or [CACHE_METHODS[0]]:
        run = f"{method}_frozen"
        row = Row("cache", f"{method} freeze:all · {precision} · device · cnn",
                  key={"method": method, "precision": precision})

        def work(row: Row, run=run) -> None:
            results = {}
            for cached in (False, True):
                root = Path(opts.workdir) / f"cache-{precision}-{'on' if cached else 'off'}"
                config = suite_config(opts.device, precision, Path(opts.schema), root, opts.methods, "cnn")
                metrics = run_cell(config, BENCH, "cnn", run, SEED, root, placement="device", features=cached,
                                   checkpoint_every_s=None)
                state = load_torch(root / "runs" / BENCH / "cnn" / run / f"s{SEED}" / f"task{N_TASKS - 1}" / "state.pt")
                results[cached] = (metrics, state)
            if not any((Path(opts.workdir) / f"cache-{precision}-on" / "features").rglob("features.pt")):
                raise RuntimeError("the cached run computed no feature cache (config.uses_feature_cache is false)")
            (m_off, s_off), (m_on, s_on) = results[False], results[True]
            final_off, final_on = m_off["acc_matrix"][-1], m_on["acc_matrix"][-1]
            diff = max(abs(a - b) for a, b in zip(final_off, final_on))
            weights = max(float((s_off["model"][k].float() - s_on["model"][k].float()).abs().max())
                          for k in s_off["model"] if s_off["model"][k].is_floating_point())
            row.numbers = {"acc_uncached": m_off["metrics"]["acc"], "acc_cached": m_on["metrics"]["acc"],
                           "max_task_diff": diff, "max_weight_diff": weights}
            if not _finite(final_off + final_on):
                row.fail(f"non-finite accuracies: uncached {final_off}, cached {final_on}")
            elif diff > CACHE_TOLERANCE:
                row.fail(f"cached and uncached training differ by {diff:.1f} points on a task "
                         f"(> {CACHE_TOLERANCE:g}): uncached {_fmt_list(final_off)}, cached {_fmt_list(final_on)}")

        rows.append(_attempt(row, work))
    return rows


class _Interrupted(Exception):
    """Stands for the job dying right after an in-job checkpoint reached the disk."""


def resume_group(opts: Options, precision: str, placement: str) -> list[Row]:
    """``deterministic: true``: task 1 interrupted right after an in-job checkpoint in its second epoch and resumed
    against the uninterrupted task; every saved tensor must be equal bit for bit."""
    from unittest import mock

    from clgrid import config as cl
    from clgrid import fit, jobs
    from clgrid.io import load_torch, read_json

    root = _fresh(Path(opts.workdir) / f"resume-{precision}-{placement}")
    rows = []
    for method in [m for m in RESUME_METHODS if m in opts.methods] or opts.methods[:1]:
        backbone = backbone_of(method)
        row = Row("resume", f"{method} · {precision} · {placement} · {backbone} · deterministic",
                  key={"method": method, "precision": precision, "placement": placement})

        def work(row: Row, method=method, backbone=backbone) -> None:
            config = suite_config(opts.device, precision, Path(opts.schema), root, opts.methods, backbone,
                                  epochs=RESUME_EPOCHS, deterministic=True)
            datasets, scenario, init = _prepare(config, root, backbone)
            before = _children()
            spec = cl.run_spec(config, BENCH, backbone, run_name(method), SEED)
            out = root / method

            def train(task: int, prev: str, name: str, every: float | None = None) -> tuple[Path, Path]:
                state, ev = out / name / "state.pt", out / name / "eval.json"
                try:
                    jobs.train(spec, scenario, datasets, prev, task, str(state), str(ev), placement=placement,
                               workers=opts.workers, checkpoint_every_s=every)
                finally:
                    _reap(before)  # leaked loader workers (the method rows report them), and a killed task's
                return state, ev

            prev, _ = train(0, init, "task0")
            whole_state, whole_eval = train(1, str(prev), "whole")
            n_train = len(read_json(scenario)["tasks"][1]["train_idx"])
            per_epoch = -(-n_train // int(spec["train"]["batch_size"]))
            kill_at = per_epoch + max(1, per_epoch // 2)  # the n-th checkpoint (one per step): mid second epoch
            real_save, saves = fit.save_torch, [0]  # the in-job checkpoint is written by clgrid.fit

            def save_then_die(path, obj):
                real_save(path, obj)
                if str(path).endswith(".resume.pt"):
                    saves[0] += 1
                    if saves[0] == kill_at:
                        raise _Interrupted

            with mock.patch.object(fit, "save_torch", save_then_die):
                try:
                    train(1, str(prev), "killed", every=1e-9)
                except _Interrupted:
                    pass
                else:
                    raise RuntimeError(f"task 1 finished before its {kill_at}th in-job checkpoint: nothing resumed")
            payload = load_torch(out / "killed" / "state.pt.resume.pt")["resume"]
            resumed_state, resumed_eval = train(1, str(prev), "killed")
            where = f"epoch {payload['epoch'] + 1}, batch {payload['batches_done']}"
            n, difference = compare_states(load_torch(whole_state), load_torch(resumed_state))
            row.numbers = {"interrupted_at": where, "tensors_compared": n}
            if difference:
                row.fail(f"resumed state differs from the uninterrupted one (interrupted at {where}): {difference}")
            elif read_json(whole_eval)["acc"] != read_json(resumed_eval)["acc"]:
                row.fail(f"resumed evaluation differs: {read_json(whole_eval)['acc']} vs "
                         f"{read_json(resumed_eval)['acc']}")

        rows.append(_attempt(row, work))
    return rows


def compare_states(a: Any, b: Any, path: str = "") -> tuple[int, str]:
    """(tensors compared, the first difference or ''): nested dicts/lists of tensors compared bit for bit."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return 0, f"{path}: a tensor on one side only"
        if a.dtype != b.dtype or a.shape != b.shape:
            return 1, f"{path}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        if not torch.equal(a, b):
            delta = (a.double() - b.double()).abs().max().item() if a.is_floating_point() else "?"
            return 1, f"{path}: max |difference| {delta}"
        return 1, ""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return 0, f"{path}: keys differ ({sorted(map(str, set(a) ^ set(b)))[:5]})"
        total = 0
        for key in sorted(a, key=str):
            n, diff = compare_states(a[key], b[key], f"{path}.{key}" if path else str(key))
            total += n
            if diff:
                return total, diff
        return total, ""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return 0, f"{path}: lengths {len(a)} vs {len(b)}"
        total = 0
        for i, (x, y) in enumerate(zip(a, b)):
            n, diff = compare_states(x, y, f"{path}[{i}]")
            total += n
            if diff:
                return total, diff
        return total, ""
    if a != b and not (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
        return 0, f"{path}: {a!r} vs {b!r}"
    return 0, ""


def throughput_group(opts: Options) -> list[Row]:
    """ResNet-18 at 32 px through clgrid's loop: images/s per setting, TFLOP/s, fraction of the bf16 peak."""
    import torch

    from clgrid import throughput as tp
    from clgrid.train import configure_device, resolve_device

    device = resolve_device(opts.device)
    configure_device(device, {})  # what a job gets by default: cuDNN autotuning on a GPU
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    sizes = {**(THROUGHPUT_GPU if device.type == "cuda" else THROUGHPUT_CPU), **opts.throughput}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = tp.peak_bf16_tflops(gpu) if gpu else None
    flops: dict[str, float] = {}
    rows = []
    flop_row = Row("throughput", "ResNet-18 32 px · FLOPs of a training step", key={"setting": "flops"})

    def count(row: Row) -> None:
        flops["per_image"] = tp.flops_per_image(device, batch=min(8, sizes["batch"]))
        row.numbers = {"gflop_per_image": flops["per_image"] / 1e9, "peak_bf16_tflops": peak}

    rows.append(_attempt(flop_row, count))
    for name, settings in tp.SETTINGS.items():
        label = {"fp32": "fp32", "bf16": "bf16", "channels_last": "bf16 + channels_last",
                 "compile": "bf16 + torch.compile"}[name]
        row = Row("throughput", f"ResNet-18 32 px · {label} · batch {sizes['batch']}", key={"setting": name})
        if name == "compile" and device.type == "cpu" and not opts.cpu_compile:
            row.status = "skip"
            row.numbers = {"note": "torch.compile is not timed on the CPU (minutes of compilation for a few "
                                   "steps); --cpu-compile times it"}
            _progress(f"{row.check:<10} {row.setting:<40} skip")
            rows.append(row)
            continue

        def work(row: Row, settings=settings) -> None:
            result = tp.measure(settings, device, sizes["batch"], sizes["steps"], sizes["warmup"],
                                flops_per_image=flops.get("per_image"))
            row.numbers = {"images_per_s": result["images_per_s"], "tflops": result.get("tflops"),
                           "fraction_of_bf16_peak": result["tflops"] / peak if peak and "tflops" in result else None,
                           "warmup_s": result["warmup_s"], "steps": result["steps"]}

        rows.append(_attempt(row, work))
    return rows


# --- running the groups ----------------------------------------------------------------------------------------


def _child_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    # clgrid's per-epoch lines and open_clip's model-building chatter (on the root logger: "No pretrained weights
    # loaded" for the doctor's random CLIP) only with -v; clgrid's warnings always.
    logging.getLogger().setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("clgrid").setLevel(logging.INFO if verbose else logging.WARNING)


def _run_group(group: str, opts: Options, args: tuple) -> list[Row]:
    """Entry point of a group (in this process or a fresh one)."""
    import multiprocessing

    _child_logging(opts.verbose)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if opts.start_method and multiprocessing.get_start_method() != opts.start_method:
        # A spawned process defaults to spawning its own children; a train job started by Snakemake forks its
        # DataLoader workers (Linux), and the host-placement rows must time and test that.
        multiprocessing.set_start_method(opts.start_method, force=True)
    functions = {"methods": method_group, "cache": cache_group, "resume": resume_group,
                 "throughput": throughput_group}
    return functions[group](opts, *args)


def _in_fresh_process(group: str, opts: Options, args: tuple) -> list[Row]:
    """The group in a new interpreter (spawned: no CUDA state inherited), its rows sent back."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_run_group, group, opts, args).result()
        except BrokenProcessPool as err:
            setting = " · ".join(str(a) for a in args if not isinstance(a, list)) or group
            return [Row(group, setting, key={"died": True}).fail(
                f"the check's process died ({err}); its progress lines above show how far it got; rerun with "
                "--no-isolate -v to see where")]


def run_checks(opts: Options, isolate: bool = True) -> list[Row]:
    """Every requested group, each (by default) in a fresh process; the rows in the order they ran."""
    run = (lambda g, a: _in_fresh_process(g, opts, a)) if isolate else (lambda g, a: _run_group(g, opts, a))
    rows: list[Row] = []
    if "methods" in opts.checks:
        for precision in opts.precisions:
            for placement in opts.placements:
                todo = list(opts.methods)
                while todo:  # a group stopped by a broken CUDA context goes on in a new process
                    got = run("methods", (precision, placement, todo))
                    rows += got
                    if not got or any(r.key.get("died") for r in got):
                        break  # the process died (no rows for the methods it ran): not retried
                    done = {r.key.get("method") for r in got}
                    todo = [m for m in todo if m not in done]
    if "cache" in opts.checks:
        for precision in opts.precisions:
            rows += run("cache", (precision,))
    if "throughput" in opts.checks:
        rows += run("throughput", ())
    if "resume" in opts.checks:  # last: deterministic kernels are a process-wide setting
        for precision in opts.precisions:
            for placement in opts.placements:
                rows += run("resume", (precision, placement))
    judge_against_reference(rows, opts)
    return rows


def judge_against_reference(rows: list[Row], opts: Options) -> None:
    """Each method row's ACC against its method's fp32 row at the first placement (the reference), and a row at
    another placement against the same precision's row at the first one: FAIL beyond the method's bound, the larger
    of ``opts.tolerance`` and twice what changing the seed alone moved the reference's ACC."""
    if "fp32" not in opts.precisions:
        return
    first = opts.placements[0]
    by_key = {(r.key["method"], r.key["precision"], r.key["placement"]): r for r in rows
              if r.check == "method" and "acc" in r.numbers}
    for row in rows:
        if row.check != "method" or "acc" not in row.numbers:
            continue
        method, precision, placement = row.key["method"], row.key["precision"], row.key["placement"]
        ref = by_key.get((method, "fp32", first))
        bound = opts.tolerance
        if ref is not None and "acc_seed1" in ref.numbers:
            bound = max(bound, 2 * abs(ref.numbers["acc"] - ref.numbers["acc_seed1"]))
        row.numbers["bound"] = bound
        if row is ref:
            row.numbers["vs_reference"] = "reference"
            continue
        if ref is None:
            row.numbers["vs_reference"] = "n/a (the reference failed)"
            continue
        delta = row.numbers["acc"] - ref.numbers["acc"]
        row.numbers["vs_reference"] = delta
        if row.status == "ok" and abs(delta) > bound:
            row.fail(f"ACC {row.numbers['acc']:.1f} is {delta:+.1f} points from fp32/{first}'s "
                     f"{ref.numbers['acc']:.1f} (bound ±{bound:.0f})")
        same = by_key.get((method, precision, first))
        if placement != first and same is not None:
            if same.numbers["acc_matrix"] == row.numbers["acc_matrix"]:
                row.numbers["vs_placement"] = f"= {first}"
            else:
                d = row.numbers["acc"] - same.numbers["acc"]
                row.numbers["vs_placement"] = f"Δ {d:+.1f} vs {first}"
                if row.status == "ok" and abs(d) > bound:
                    row.fail(f"ACC {row.numbers['acc']:.1f} is {d:+.1f} points from the same precision with data "
                             f"on the {first} (bound ±{bound:.0f}); the placement should not change results")


# --- the table --------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_list(values) -> str:
    return "[" + ", ".join(_fmt(v) for v in values) + "]"


def _numbers(row: Row) -> str:
    n = row.numbers
    if row.check == "method" and "acc" in n:
        vs = n.get("vs_reference")
        bound = f" of ±{n['bound']:.0f}" if "bound" in n else ""
        vs = vs if isinstance(vs, str) else f"Δ {vs:+.1f}{bound}" if vs is not None else "Δ n/a"
        if "acc_seed1" in n:
            vs += f"; seed 1: {_fmt(n['acc_seed1'])}, bound ±{n.get('bound', 0):.0f}"
        if "vs_placement" in n:
            vs += f"; {n['vs_placement']}"
        return (f"ACC {_fmt(n['acc'])} ({vs}); last task {_fmt(n['last_task'])}; task-IL {_fmt(n['acc_task_il'])}; "
                f"{row.seconds:.1f} s")
    if row.check == "cache" and "acc_cached" in n:
        return (f"ACC uncached {_fmt(n['acc_uncached'])}, cached {_fmt(n['acc_cached'])}; max task Δ "
                f"{_fmt(n['max_task_diff'], 2)}; max weight Δ {n['max_weight_diff']:.1e}")
    if row.check == "resume" and "interrupted_at" in n:
        return f"interrupted at {n['interrupted_at']}; {n['tensors_compared']} tensors compared"
    if row.check == "throughput":
        if "note" in n:
            return n["note"]
        if "gflop_per_image" in n:
            peak = n["peak_bf16_tflops"]
            return f"{n['gflop_per_image']:.2f} GFLOP per image (fwd+bwd); bf16 peak {_fmt(peak, 0)} TFLOP/s" \
                   + ("" if peak else " (unknown GPU or CPU: no fraction)")
        if "images_per_s" in n:
            frac = n.get("fraction_of_bf16_peak")
            rate = n["images_per_s"]
            rate_text = f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"
            return (f"{rate_text} images/s; {_fmt(n.get('tflops'), 2)} TFLOP/s; "
                    f"{'n/a' if frac is None else f'{100 * frac:.1f} %'} of bf16 peak")
    return ", ".join(f"{k} {_fmt(v)}" for k, v in n.items())


def environment(device: str) -> dict[str, Any]:
    import platform

    import torch

    env = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=torch.cuda.get_device_name(torch.device(device)), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return env


def format_table(rows: list[Row], opts: Options, env: dict[str, Any], wall_s: float) -> str:
    failed = sum(r.status == "FAIL" for r in rows)
    what = env.get("gpu") or "CPU"
    head = [
        f"## clgrid doctor: {what} ({env['device']}), torch {env['torch']}"
        + (f", CUDA {env['cuda']}, cuDNN {env['cudnn']}" if env.get("cuda") else ""),
        "",
        f"{len(rows)} checks, {failed} failed, {sum(r.status == 'skip' for r in rows)} skipped, "
        f"{wall_s:.0f} s. Precisions {', '.join(opts.precisions)}; placements {', '.join(opts.placements)}.",
        "",
        f"- **method**: {BENCH} (scikit-learn's 8x8 digits, 5 classes per task) in {N_TASKS} tasks x 1 epoch "
        f"(batch {TRAIN['batch_size']}), seed {SEED}, through the train jobs; CNN with BatchNorm, LoRA on an MLP, "
        "ZSCL on a tiny random CLIP. ACC = final average class-IL accuracy (%); Δ = ACC minus the same method's fp32 "
        f"run with data on the {opts.placements[0]} (the reference row, also trained with seed 1). FAIL beyond the "
        f"bound: ±{opts.tolerance:g} points, or twice what the seed alone moved the reference if more (dml's k-NN "
        "retention swings by ~20). It catches a broken path (no learning, NaN, skipped steps, wrong dtypes), not "
        "small biases. A host row must also match the device row (bit for bit on the CPU) and leave no DataLoader "
        "worker running. ZSCL's random CLIP barely learns in one epoch: its row checks that the path runs.",
        f"- **cache**: frozen CNN (freeze: all) on the extract_features cache vs through the backbone; FAIL if a "
        f"task's final accuracy differs by more than {CACHE_TOLERANCE:g} point.",
        f"- **resume**: train.deterministic: true; task 1 ({RESUME_EPOCHS} epochs) interrupted right after an in-job "
        "checkpoint mid epoch 2, resumed; FAIL unless every saved tensor equals the uninterrupted task's bit for bit.",
        "- **throughput**: ResNet-18 (CIFAR stem) at 32 px, random data on the device, naive method through "
        "clgrid's training loop; FLOPs counted with FlopCounterMode; fraction of the GPU's dense bf16 peak.",
        "",
        "| check | setting | status | numbers | first error line |",
        "|---|---|---|---|---|",
    ]
    body = [f"| {r.check} | {r.setting} | {'**FAIL**' if r.status == 'FAIL' else r.status} | "
            f"{_numbers(r)} | {r.error.replace('|', '/')} |" for r in rows]
    return "\n".join(head + body) + "\n"


# --- the command --------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The verb's options (no torch import: ``clgrid``'s parser is built by every job)."""

    def names(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, auto (a GPU when present) or cpu; "
                                                    "without CUDA, cuda and auto say so and exit 0")
    p.add_argument("--precisions", type=names, default=None, metavar="P,P",
                   help="training precisions to check (fp32, bf16, fp16; default: "
                        "the device's own, bf16 on a recent GPU, and fp32)")
    p.add_argument("--placements", type=names, default=["device", "host"], metavar="P,P",
                   help="data placements: device (inputs in device memory), host (a DataLoader streams them); "
                        "default device,host")
    p.add_argument("--methods", type=names, default=None, metavar="M,M", help="methods (default: every registered)")
    p.add_argument("--checks", type=names, default=["methods", "cache", "resume", "throughput"], metavar="C,C",
                   help="which checks: methods, cache, resume, throughput (default: all)")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file, and the rows (with full "
                                               "tracebacks) as JSON beside it")
    p.add_argument("--workdir", default=None, help="folder for the checks' files (default: a temporary folder, "
                                                   "removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (a --workdir is never removed; "
                                                       "each check starts its subfolder afresh)")
    p.add_argument("--schema", default=None, help="the workflow's config schema (default: found from the checkout)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"points of ACC a run may differ from its method's fp32 reference at least (default "
                        f"{TOLERANCE:g}; twice what the seed alone moves the reference, where that is more)")
    p.add_argument("--throughput-steps", type=int, default=None, help="timed steps per throughput setting "
                   f"(default {THROUGHPUT_GPU['steps']} on a GPU, {THROUGHPUT_CPU['steps']} on the CPU)")
    p.add_argument("--throughput-batch", type=int, default=None, help="throughput batch size (default "
                   f"{THROUGHPUT_GPU['batch']} on a GPU, {THROUGHPUT_CPU['batch']} on the CPU)")
    p.add_argument("--throughput-warmup", type=int, default=None, help="untimed warm-up steps (default "
                   f"{THROUGHPUT_GPU['warmup']} on a GPU, {THROUGHPUT_CPU['warmup']} on the CPU)")
    p.add_argument("--cpu-compile", action="store_true", help="time torch.compile on the CPU too (slow)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of host-placed runs (default 2)")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="run every check in this process (faster; a poisoned CUDA context then fails the rest)")


def no_cuda_line(device: str) -> str | None:
    """The one line said when the device asked for is CUDA and torch sees none; None when CUDA is there."""
    if device == "cpu":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return (f"clgrid doctor: no CUDA GPU visible to torch {torch.__version__} ({build}) on this machine, so nothing "
            "was checked; run it on a GPU node, or with --device cpu to check the CPU path")


def run(args: argparse.Namespace) -> int:
    """``clgrid doctor``: returns the exit code (0 all ok or no CUDA to check, 1 a check failed, 2 bad usage)."""
    import multiprocessing

    from clgrid.methods import METHODS
    from clgrid.train import PRECISIONS, resolve_device, resolve_precision

    line = no_cuda_line(args.device)
    if line:
        print(line)
        return 0
    device = str(resolve_device(args.device))
    precisions = args.precisions or list(dict.fromkeys([resolve_precision("auto", resolve_device(device)), "fp32"]))
    methods = args.methods or sorted(METHODS)
    problems = [f"unknown precision '{p}'" for p in precisions if p not in PRECISIONS or p == "auto"]
    problems += [f"unknown placement '{p}'" for p in args.placements if p not in ("device", "host")]
    problems += [f"unknown method '{m}'" for m in methods if m not in METHODS]
    problems += [f"unknown check '{c}'" for c in args.checks if c not in ("methods", "cache", "resume", "throughput")]
    if problems:
        print(f"clgrid doctor: {'; '.join(problems)}", file=sys.stderr)
        return 2
    try:
        schema = find_schema(args.schema)
    except FileNotFoundError as err:
        print(f"clgrid doctor: {err}", file=sys.stderr)
        return 2
    throughput = {k: v for k, v in (("steps", args.throughput_steps), ("batch", args.throughput_batch),
                                    ("warmup", args.throughput_warmup)) if v is not None}
    temporary = args.workdir is None
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="clgrid-doctor-"))
    workdir.mkdir(parents=True, exist_ok=True)
    opts = Options(device=device, precisions=list(dict.fromkeys(precisions)), placements=list(args.placements),
                   methods=methods, checks=list(args.checks), workdir=str(workdir), schema=str(schema),
                   tolerance=args.tolerance, throughput=throughput,
                   cpu_compile=args.cpu_compile, workers=args.workers, verbose=getattr(args, "verbose", False),
                   start_method=multiprocessing.get_start_method())
    env = environment(device)
    _progress(f"checking {env.get('gpu') or 'the CPU'} with torch {env['torch']}: precisions {opts.precisions}, "
              f"placements {opts.placements}, {len(methods)} methods, checks {opts.checks}; files in {workdir}")
    start = time.perf_counter()
    try:
        rows = run_checks(opts, isolate=args.isolate)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - start
    table = format_table(rows, opts, env, wall)
    print(table, end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        record = {"environment": env, "options": {k: v for k, v in asdict(opts).items() if k != "workdir"},
                  "tolerance": opts.tolerance, "cache_tolerance": CACHE_TOLERANCE, "wall_s": round(wall, 1),
                  "failed": sum(r.status == "FAIL" for r in rows), "rows": [asdict(r) for r in rows]}
        out.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
        _progress(f"wrote {out} and {out.with_suffix('.json')}")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clgrid doctor", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
