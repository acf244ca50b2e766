"""The check groups (methods, feature cache, resume, throughput), each returning its rows, and the helpers that
keep one check from leaking into the next."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from clgrid.doctor.suite import (BENCH, CACHE_METHODS, CACHE_TOLERANCE, N_TASKS, RESUME_EPOCHS, RESUME_METHODS, SEED,
                                 THROUGHPUT_CPU, THROUGHPUT_GPU, Options, Row, attempt, backbone_of, finite, prepare,
                                 progress, run_name, suite_config)
from clgrid.doctor.table import fmt_list


def method_group(opts: Options, precision: str, placement: str, methods: list[str]) -> list[Row]:
    """Every method in ``methods``: 2 tasks x 1 epoch under ``precision`` with inputs placed at ``placement``. The
    reference group (fp32 at the first placement) also trains each method with seed 1: how far the seed alone moves
    its ACC widens that method's tolerance (``judge``)."""
    from clgrid.inprocess import run_cell

    root = fresh(Path(opts.workdir) / f"methods-{precision}-{placement}")
    reference_group = precision == "fp32" and placement == opts.placements[0]
    rows = []
    for method in methods:
        backbone = backbone_of(method)
        row = Row("method", f"{method} · {precision} · {placement} · {backbone}",
                  key={"method": method, "precision": precision, "placement": placement, "backbone": backbone})

        def work(row: Row, method=method, backbone=backbone) -> None:
            config = suite_config(opts.device, precision, Path(opts.schema), root, opts.methods, backbone)
            before = children()
            metrics = run_cell(config, BENCH, backbone, run_name(method), SEED, root, placement=placement,
                               workers=opts.workers, checkpoint_every_s=None)
            leaked = reap(before)
            matrix = metrics["acc_matrix"]
            row.numbers = {"acc": metrics["metrics"]["acc"], "last_task": matrix[-1][-1],
                           "acc_task_il": metrics["metrics"].get("acc_task_il"), "acc_matrix": matrix}
            if not finite([v for r in matrix for v in r]):
                row.fail(f"non-finite accuracies {matrix}")
            elif leaked:
                row.numbers["leaked_workers"] = leaked
                row.fail(f"{leaked} DataLoader worker processes still alive after the run returned ({N_TASKS} "
                         "tasks): each task's loader leaks its persistent workers (collecting one blocks ~5 s)")
            if reference_group:
                other = run_cell(config, BENCH, backbone, run_name(method), SEED + 1, root, placement=placement,
                                 workers=opts.workers, checkpoint_every_s=None)
                reap(before)
                row.numbers["acc_seed1"] = other["metrics"]["acc"]

        rows.append(attempt(row, work))
        if row.status == "FAIL" and not device_healthy(opts.device):
            row.error += " (the CUDA context is broken; the group restarts in a new process)"
            break
    return rows


def fresh(folder: Path) -> Path:
    """``folder``, emptied: a check never reads what an earlier doctor run left in a reused ``--workdir``."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def children() -> set[int]:
    import multiprocessing

    return {p.pid for p in multiprocessing.active_children()}


def reap(before: set[int]) -> int:
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


def device_healthy(device: str) -> bool:
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
        fresh(Path(opts.workdir) / f"cache-{precision}-{cached}")
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
            if not finite(final_off + final_on):
                row.fail(f"non-finite accuracies: uncached {final_off}, cached {final_on}")
            elif diff > CACHE_TOLERANCE:
                row.fail(f"cached and uncached training differ by {diff:.1f} points on a task "
                         f"(> {CACHE_TOLERANCE:g}): uncached {fmt_list(final_off)}, cached {fmt_list(final_on)}")

        rows.append(attempt(row, work))
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

    root = fresh(Path(opts.workdir) / f"resume-{precision}-{placement}")
    rows = []
    for method in [m for m in RESUME_METHODS if m in opts.methods] or opts.methods[:1]:
        backbone = backbone_of(method)
        row = Row("resume", f"{method} · {precision} · {placement} · {backbone} · deterministic",
                  key={"method": method, "precision": precision, "placement": placement})

        def work(row: Row, method=method, backbone=backbone) -> None:
            config = suite_config(opts.device, precision, Path(opts.schema), root, opts.methods, backbone,
                                  epochs=RESUME_EPOCHS, deterministic=True)
            datasets, scenario, init = prepare(config, root, backbone)
            before = children()
            spec = cl.run_spec(config, BENCH, backbone, run_name(method), SEED)
            out = root / method

            def train(task: int, prev: str, name: str, every: float | None = None) -> tuple[Path, Path]:
                state, ev = out / name / "state.pt", out / name / "eval.json"
                try:
                    jobs.train(spec, scenario, datasets, prev, task, str(state), str(ev), placement=placement,
                               workers=opts.workers, checkpoint_every_s=every)
                finally:
                    reap(before)  # leaked loader workers (the method rows report them), and a killed task's
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

        rows.append(attempt(row, work))
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
    from clgrid.device import configure_device, resolve_device

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

    rows.append(attempt(flop_row, count))
    for name, settings in tp.SETTINGS.items():
        label = {"fp32": "fp32", "bf16": "bf16", "channels_last": "bf16 + channels_last",
                 "compile": "bf16 + torch.compile"}[name]
        row = Row("throughput", f"ResNet-18 32 px · {label} · batch {sizes['batch']}", key={"setting": name})
        if name == "compile" and device.type == "cpu" and not opts.cpu_compile:
            row.status = "skip"
            row.numbers = {"note": "torch.compile is not timed on the CPU (minutes of compilation for a few "
                                   "steps); --cpu-compile times it"}
            progress(f"{row.check:<10} {row.setting:<40} skip")
            rows.append(row)
            continue

        def work(row: Row, settings=settings) -> None:
            result = tp.measure(settings, device, sizes["batch"], sizes["steps"], sizes["warmup"],
                                flops_per_image=flops.get("per_image"))
            row.numbers = {"images_per_s": result["images_per_s"], "tflops": result.get("tflops"),
                           "fraction_of_bf16_peak": result["tflops"] / peak if peak and "tflops" in result else None,
                           "warmup_s": result["warmup_s"], "steps": result["steps"]}

        rows.append(attempt(row, work))
    return rows
