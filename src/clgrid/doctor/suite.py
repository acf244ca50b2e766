"""The doctor's tiny problem (settings, backbones, the validated config, its first jobs), its options and the
row every check fills."""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH = "split_digits"
N_TASKS = 2
SEED = 0
TOLERANCE = 10.0
"""Points of final ACC a run may differ from its method's fp32 / device run (the reference row).

On this tiny problem (1 epoch, 2 tasks, one seed) a change of arithmetic changes the trajectory, and ACC moves by
up to a few points between seeds (docs/getting-started.md); 10 points is far outside that and is what a broken path gives
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
    doctor = Path(__file__).resolve().parent
    package = str(doctor.parent)
    where = None
    for frame in traceback.extract_tb(err.__traceback__):
        if frame.filename.startswith(package) and not frame.filename.startswith(str(doctor) + os.sep):
            where = frame
    if where is not None:
        text += f" [at clgrid/{Path(where.filename).relative_to(package)}:{where.lineno} in {where.name}]"
    return text


def attempt(row: Row, work: Callable[[Row], None]) -> Row:
    """Run one check into ``row``; any exception becomes a FAIL row (the suite goes on)."""
    start = time.perf_counter()
    try:
        work(row)
    except Exception as err:  # noqa: BLE001 - every failure is a result of the check
        row.fail(first_error_line(err), traceback.format_exc())
    row.seconds = round(time.perf_counter() - start, 2)
    progress(f"{row.check:<10} {row.setting:<40} {row.status:<4} {row.seconds:6.1f} s"
              + (f"  {row.error}" if row.error else ""))
    return row


def progress(message: str) -> None:
    print(f"[doctor] {message}", file=sys.stderr, flush=True)


# --- the tiny problem -------------------------------------------------------------------------------------------


def find_schema(explicit: str | None = None) -> Path:
    """The workflow's config schema: ``explicit``, else the checkout this package was installed from (editable
    install: ``src/clgrid/doctor`` -> ``workflow/schemas``), else the current directory's."""
    candidates = [Path(explicit)] if explicit else [
        Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml",
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
    from clgrid.config import check

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


def prepare(config: dict[str, Any], root: Path, backbone: str) -> tuple[list[str], str, str]:
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


def finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)



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
