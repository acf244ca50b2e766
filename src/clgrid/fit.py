"""One task of a run, continued from the previous task's state: training (``clgrid.train.fit_task``), resuming
from an in-job checkpoint after a kill, recording a divergence instead of failing, and the evaluation that
follows.

The train job (``clgrid.jobs.fit``) reads the previous state, calls ``continue_run`` and writes what it returns.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from clgrid.context import JobContext
from clgrid.io import CorruptFileError, load_torch, provenance, save_torch
from clgrid.spec import RunSpec

log = logging.getLogger("clgrid")


def continue_run(spec: RunSpec, ctx: JobContext, previous: dict[str, Any], task_id: int, out_state: str,
                 checkpoint_every_s: float | None, features: str | None = None) -> tuple[dict[str, Any], dict]:
    """Task ``task_id`` of a run from the state after the task before it: (the state to save, with the model's
    weights; the evaluation record). A diverged run carries its flag on untrained; with ``features`` the head
    trains on the frozen backbone's cached features and the backbone never runs."""
    import torch

    from clgrid.models.feature_cache import BackboneCounter, head_only, state_digest

    torch.manual_seed(spec.seed * 1000 + task_id)
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
    return {**state, "model": model.state_dict()}, record


def _train_task(spec: RunSpec, ctx: JobContext, model, previous: dict[str, Any], task_id: int, out_state: str,
                checkpoint_every_s: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one task and evaluate; returns the state to save (without the model's weights) and the eval record."""
    from clgrid.data.transforms import make_augment
    from clgrid.evaluate import curve_point, eval_record
    from clgrid.methods import get_method
    from clgrid.train import StepProbe, TrainingDiverged, fit_task, task_generator, task_lr

    task_lr(spec.train, task_id, len(ctx.scenario["tasks"]))  # a train.lr_per_task of the wrong length fails here
    generator = task_generator(spec.seed, task_id)
    transform_cfg = spec.benchmark_cfg.get("transform", {})
    augment = make_augment(transform_cfg, generator) if transform_cfg.get("augment", "none") != "none" else None
    reference = spec.reference_dataset
    sampler = (lambda n, gen: ctx.sample_images(reference, n, gen)) if reference else None
    method = get_method(spec.method_name)(model, spec.method_params, ctx.scenario["n_classes"],
                                          inputs_device=ctx.inputs_device, precision=ctx.precision,
                                          augment=augment, reference_images=sampler)
    if "method" in previous:
        method.load_state_dict(previous["method"])
    every = spec.train_settings.get("eval_every_iters")
    # train.eval_every_iters: every task's test sets measured during the task, kept as the record's "curve".
    probe = StepProbe(int(every), lambda step: curve_point(ctx, method.predict, step)) if every else None

    def load_task(i: int):
        return ctx.task_data(i, "train")

    data = method.training_data(load_task(task_id), load_task)
    log.info("run %s task %d: %d training samples on %s", spec.run_id, task_id, len(data.y), ctx.device)
    resume_path = Path(out_state + ".resume.pt")
    resume = load_resume(resume_path, spec, task_id)

    def checkpoint(payload: dict[str, Any]) -> None:
        save_torch(resume_path, {"clgrid": _provenance(spec, ctx), "task": task_id, "resume": payload})
        log.info("in-job checkpoint: epoch %d, batch %d -> %s", payload["epoch"] + 1, payload["batches_done"],
                 resume_path)

    try:
        epoch_losses = fit_task(model, method, data, spec.train, generator, augment, checkpoint,
                                checkpoint_every_s, resume, probe)
    except TrainingDiverged as err:
        if spec.train_settings.get("on_divergence", "stop") != "record":
            raise
        # The run is a result too (a sweep's too-large learning rate): its files say it diverged, the grid goes on.
        log.error("%s: recorded as diverged (train.on_divergence: record); the run's later tasks are not trained",
                  err.summary)
        diverged = err.record()
        state = {"clgrid": _provenance(spec, ctx), "task": task_id,
                 "method": method.state_dict(), "epoch_losses": err.epoch_losses, "diverged": diverged}
        record = {**diverged_record(spec, ctx, task_id, diverged), "epoch_losses": err.epoch_losses}
        if probe is not None:
            record["curve"] = probe.points
        return state, record
    state = {"clgrid": _provenance(spec, ctx), "task": task_id, "method": method.state_dict(),
             "epoch_losses": epoch_losses}
    record = eval_record(spec, ctx, method.predict, task_id, method)
    record["epoch_losses"] = epoch_losses
    if probe is not None:
        record["curve"] = probe.points
    return state, record


def _provenance(spec: RunSpec, ctx: JobContext) -> dict[str, Any]:
    return provenance(spec.to_json(), spec.seed, str(ctx.device))


def diverged_record(spec: RunSpec, ctx: JobContext, task_id: int, diverged: dict[str, Any]) -> dict[str, Any]:
    """The evaluation row of a task at or after the one where the run diverged: the keys ``eval_record`` writes,
    every accuracy NaN (a model blown up mid-task, or never trained on the task, measures nothing of the method)."""
    nan = [float("nan")] * len(ctx.scenario["tasks"])
    record = {"after_task": task_id, "acc": nan, "acc_task_il": nan, "top5": nan, "diverged": diverged}
    if ctx.evaluate_on == "validation":  # only the validation splits are evaluated
        record["evaluated_on"] = "validation"
        record["provenance"] = _provenance(spec, ctx)
        return record
    if ctx.has_validation:
        record["validation"] = {"acc": nan, "acc_task_il": nan}
    if ctx.scenario.get("holdout"):
        record["unseen_acc"] = float("nan")
    for name in ctx.scenario.get("eval_sets", {}):
        record[f"acc_{name}"] = record[f"acc_{name}_task_il"] = nan
    record["provenance"] = _provenance(spec, ctx)
    return record


def _carry_divergence(spec: RunSpec, ctx: JobContext, previous: dict[str, Any], task_id: int):
    """A task after the one where the run diverged: not trained; the state (the diverged model) and the flag go on."""
    diverged = previous["diverged"]
    log.warning("run %s diverged at task %d (step %d, loss %s): task %d is not trained, its accuracies are NaN",
                spec.run_id, diverged["task"], diverged["step"], diverged["loss"], task_id)
    state = {"clgrid": _provenance(spec, ctx), "task": task_id, "epoch_losses": [], "diverged": diverged}
    if "method" in previous:
        state["method"] = previous["method"]
    return state, {**diverged_record(spec, ctx, task_id, diverged), "epoch_losses": []}


def load_resume(path: Path, spec: RunSpec | dict[str, Any], task_id: int) -> dict[str, Any] | None:
    """The in-job checkpoint of this very task and spec, if a killed run left one; anything else is ignored."""
    if not path.exists():
        return None
    try:
        saved = load_torch(path)
    except CorruptFileError as err:
        log.warning("ignoring unreadable in-job checkpoint (%s); training the task from its start", err)
        return None
    if saved.get("task") != task_id or saved["clgrid"].get("config_hash") != RunSpec.of(spec).config_hash:
        log.warning("ignoring in-job checkpoint %s: it belongs to another task or config", path)
        return None
    log.info("resuming from in-job checkpoint %s", path)
    return saved["resume"]
