"""The one training loop. Methods change it only through the hooks of ``clgrid.methods.Method``.

How a step computes on the device (precision, channels-last, compile) is ``clgrid.device.StepRunner``'s; the
batches come from ``clgrid.batches.BatchStream``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from clgrid.batches import BatchStream
from clgrid.device import NondeterministicOp, StepRunner
from clgrid.methods.base import Method, TaskData
from clgrid.optim import SGD, Adam

log = logging.getLogger("clgrid.train")


def task_generator(seed: int, task_id: int) -> torch.Generator:
    """A CPU generator for shuffling and sampling, independent per (seed, task) so any task can be rerun alone."""
    derived = int(np.random.SeedSequence([seed, task_id]).generate_state(1)[0])
    return torch.Generator().manual_seed(derived)


def make_optimizer(params: list[torch.nn.Parameter], train_cfg: dict[str, Any]) -> SGD | Adam:
    """A fresh optimizer per task (state is not carried across tasks)."""
    name = train_cfg["optimizer"]
    if name == "sgd":
        return SGD(params, lr=train_cfg["lr"], momentum=train_cfg["momentum"], weight_decay=train_cfg["weight_decay"])
    if name == "adam":
        return Adam(params, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    raise ValueError(f"unknown optimizer '{name}'; valid: adam, sgd")


def task_lr(train_cfg: dict[str, Any], task_id: int, n_tasks: int | None = None) -> float:
    """The learning rate of task ``task_id``: ``train.lr_per_task[task_id]`` when the list is given (one rate per
    task, in task order: e.g. one per dataset of a dataset sequence), else ``train.lr``. With ``n_tasks``, a list
    of another length is refused, naming the field."""
    rates = train_cfg.get("lr_per_task")
    if rates is None:
        return train_cfg["lr"]
    if (n_tasks is not None and len(rates) != n_tasks) or not 0 <= task_id < len(rates):
        tasks = f"the benchmark has {n_tasks} tasks" if n_tasks is not None else f"task {task_id} has none"
        raise ValueError(f"train.lr_per_task gives {len(rates)} learning rate(s) {list(rates)}, but {tasks}: give one "
                         "per task, in task order (a dataset sequence: one per dataset of benchmarks.<name>.datasets)")
    return float(rates[task_id])


@dataclass
class StepProbe:
    """A measurement every ``every`` optimizer steps of a task (``train.eval_every_iters``): ``measure(step)``
    returns one point, kept in ``points`` in step order. The training loop puts the model back in training mode
    after each measurement, and keeps the points in its in-job checkpoint, so a resumed task keeps its curve."""

    every: int
    measure: Callable[[int], dict[str, Any]]
    points: list[dict[str, Any]] = field(default_factory=list)


class TrainingDiverged(FloatingPointError):
    """A non-finite loss: training of the task stopped before the step that would have used it.

    ``record()`` is what a run recorded as diverged (``train.on_divergence: record``) keeps in its files.
    """

    def __init__(self, task: int, epoch: int, n_epochs: int, batch: int, steps_per_epoch: int, step: int,
                 loss: float, lr: float, base_lr: float, lr_scale: float, method: str, epoch_losses: list[float],
                 lr_key: str = "train.lr"):
        self.task, self.epoch, self.batch, self.step, self.loss, self.lr = task, epoch, batch, step, loss, lr
        self.method, self.epoch_losses = method, epoch_losses
        scaled = f" ({lr_key} {base_lr:g} x the method's lr_scale {lr_scale:g})" if lr_scale != 1 else ""
        self.summary = (f"training diverged: the loss is {loss} at task {task}, step {step} of the task (epoch "
                        f"{epoch}/{n_epochs}, batch {batch}/{steps_per_epoch}), method '{method}', learning rate "
                        f"{lr:g}{scaled}")
        super().__init__(
            f"{self.summary}. Lower train.lr or the method's regularisation weight, or bound the steps with "
            "train.clip_grad_value; to keep the run as diverged and go on with the rest of the grid, set "
            "train.on_divergence: record"
        )

    def record(self) -> dict[str, Any]:
        """Where and how the run diverged, in plain JSON (the loss as a string: JSON has no NaN)."""
        return {"task": self.task, "step": self.step, "epoch": self.epoch, "batch": self.batch,
                "loss": str(self.loss), "lr": self.lr, "method": self.method}


def fit_task(
    model: torch.nn.Module,
    method: Method,
    data: TaskData,
    train_cfg: dict[str, Any],
    generator: torch.Generator,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every_s: float | None = None,
    resume: dict[str, Any] | None = None,
    probe: StepProbe | None = None,
) -> list[float]:
    """Train ``model`` on one task's data for ``epochs`` epochs (or ``iterations`` optimizer steps, the last epoch
    cut short where they end); returns the mean loss of each epoch.

    ``data.x`` is the task's inputs on the training device (uint8 images or floats); batches are taken by
    index and, when ``augment`` is given, augmented on the device. The method sees the augmented batch; the
    batch before augmentation goes to ``method.unaugmented_batch`` (what replay buffers store); the method got the
    same ``augment`` at construction (to augment what it replays).

    How a step computes on the device (``StepRunner``): ``train_cfg``'s ``precision`` (autocast; fp16 with loss
    scaling), ``channels_last`` and ``compile``; on the CPU with their defaults, the plain fp32 step.

    Preemption: when a task has run ``checkpoint_every_s`` seconds since the last in-job checkpoint,
    ``checkpoint`` gets everything needed to continue after the current step (weights, optimizer, method state
    and its in-task state, the generator, the epoch's order and position, the losses so far). Called again with
    that payload as ``resume`` (after the same ``training_data`` and a fresh ``before_task``), the task continues
    from that step and ends exactly as an uninterrupted run.

    The learning rate is ``train.lr``, or the task's entry of ``train.lr_per_task`` (``task_lr``). ``probe``
    (``train.eval_every_iters``): measured after every ``probe.every``-th step of the task (counted across epochs),
    the model in eval mode meanwhile; measuring draws no random numbers, so the trained weights are the same.

    A non-finite loss raises ``TrainingDiverged`` (a ``FloatingPointError``) naming the step, the learning rate
    and the method; the model keeps the weights of the last step taken.
    """
    method.before_task(data, generator)
    trainable = [p for p in model.parameters() if p.requires_grad] + method.extra_parameters()
    if not data.trains:
        trainable = []  # an index-only task (e.g. metric learning adding classes without training)
    elif not trainable:
        raise ValueError(f"nothing to train at task {data.task_id}: every parameter is frozen (freeze: all with a "
                         "head that has no weights?)")
    device = data.y.device
    runner = StepRunner(model, method, device, train_cfg)  # first: the optimizer's state takes the weights' layout
    # Methods differ in the step size they tolerate (LoRA's B·A product, stiff penalties): a per-method factor.
    base_lr = task_lr(train_cfg, data.task_id)
    lr_key = "train.lr" if train_cfg.get("lr_per_task") is None else f"train.lr_per_task[{data.task_id}]"
    optimizer = make_optimizer(trainable, {**train_cfg, "lr": base_lr * method.params["lr_scale"]}) \
        if trainable else None
    batch_size = int(train_cfg["batch_size"])
    n = len(data.y)
    stream = BatchStream(data, batch_size)
    epoch_losses: list[float] = []
    first_epoch, skip, total, batches, order = 0, 0, 0.0, 0, None
    if resume is not None:
        model.load_state_dict(resume["model"])
        if optimizer is not None:
            optimizer.load_state_dict(resume["optimizer"])
        method.load_state_dict(resume["method"])
        method.load_task_state(resume["task_state"])
        runner.load_state_dict(resume.get("runner", {}))
        generator.set_state(resume["generator"])
        first_epoch, skip, order = resume["epoch"], resume["batches_done"], resume["order"]
        epoch_losses, total, batches = list(resume["epoch_losses"]), resume["loss_total"], resume["batches_done"]
        if probe is not None:
            probe.points[:] = resume.get("curve", [])
        log.info("task %d resumed at epoch %d, batch %d", data.task_id, first_epoch + 1, skip)
    # The epoch's loss is summed on the device (a float() per step would wait for the GPU); float64, as the sum
    # of Python floats it replaces, so the recorded losses are the same numbers.
    loss_total = torch.tensor(total, dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    last_checkpoint = time.monotonic()
    method.train_mode()
    steps_per_epoch = -(-n // batch_size)
    iterations = train_cfg.get("iterations")
    n_epochs = -(-int(iterations) // steps_per_epoch) if iterations else int(train_cfg["epochs"])
    if not trainable:
        n_epochs = 0
    try:
        for epoch in range(first_epoch, n_epochs):
            if order is None:
                order = data.order(generator)
                loss_total.zero_()
                batches = 0
            for step, idx, x in stream.epoch(order, first=skip):
                if iterations and epoch * steps_per_epoch + step >= iterations:
                    break
                y = data.y[idx]
                if augment is not None:
                    method.unaugmented_batch(x)
                    x = augment(x)
                loss = runner.loss(x, y)
                if not torch.isfinite(loss.detach()):  # the one wait for the device per step: no step on a NaN
                    raise TrainingDiverged(
                        data.task_id, epoch + 1, n_epochs, step + 1, steps_per_epoch,
                        epoch * steps_per_epoch + step + 1, loss.item(), base_lr * method.params["lr_scale"],
                        base_lr, method.params["lr_scale"], method.name, list(epoch_losses), lr_key)
                if runner.backward(loss, optimizer):  # False: fp16 gradients overflowed, no step on this batch
                    method.after_backward()
                    runner.step(optimizer, trainable)
                    method.after_step()
                loss_total += loss.detach()
                batches += 1
                if augment is not None:
                    method.unaugmented_batch(None)
                done = epoch * steps_per_epoch + step + 1
                if probe is not None and done % probe.every == 0:
                    model.eval()
                    probe.points.append(probe.measure(done))
                    method.train_mode()
                if checkpoint is not None and checkpoint_every_s is not None and \
                        time.monotonic() - last_checkpoint >= checkpoint_every_s:
                    payload = {"epoch": epoch, "batches_done": batches, "order": order,
                               "loss_total": loss_total.item(), "epoch_losses": list(epoch_losses),
                               "generator": generator.get_state(), "model": model.state_dict(),
                               "optimizer": optimizer.state_dict(), "method": method.state_dict(),
                               "task_state": method.task_state(), "runner": runner.state_dict()}
                    if probe is not None:
                        payload["curve"] = list(probe.points)
                    checkpoint(payload)
                    last_checkpoint = time.monotonic()
            skip, order = 0, None
            epoch_losses.append(loss_total.item() / max(batches, 1))
            log.info("task %d epoch %d/%d loss %.4f", data.task_id, epoch + 1, n_epochs, epoch_losses[-1])
    except RuntimeError as err:
        if NondeterministicOp.PATTERN in str(err):
            raise NondeterministicOp.from_torch(err, data.task_id, method.name) from err
        raise
    finally:
        stream.close()  # the loader's workers end with the task, not with the job
        runner.finish()
    model.eval()
    method.after_task(data)
    return epoch_losses
