"""Self-distillation from a weight-averaged teacher (mean teacher, Tarvainen & Valpola 2017, NeurIPS).

    L = CE(z, y) + λ · T² · KL(softmax(z_T / T) ‖ softmax(z / T))

over all logits, where z_T comes from a teacher whose weights average the
student's. In continual learning the slow teacher keeps what earlier tasks
taught (the "stable model" of CLS-ER, Arani et al. 2022, ICLR; the weight-averaged
ensembles of Soutif-Cormerais et al. 2023, CoLLAs, "Improving online continual learning
performance and stability with temporal ensembles"). All logits, not only the seen
classes: the teacher is an average of the student, so its logits for classes not met yet
are as meaningful as the student's, and mean teacher applies its consistency to the full
output.

Teacher weights θ_T, student θ_S, after every optimizer step (``teacher``):

- ``ema``:    θ_T ← m·θ_T + (1−m)·θ_S with m = ``ema_ratio`` (0.999: Tarvainen & Valpola 2017,
  appendix, CIFAR-10/SVHN after the ramp-up; the common value in the project's definitions).
- ``anneal``: the same with a momentum that grows over the task on BYOL's cosine schedule
  (Grill et al. 2020, NeurIPS, §3.2), generalised from BYOL's end value 1 to ``ema_ratio``:
  m_k = m_end − (m_end − m_start)·(cos(πk/K) + 1)/2, k = steps already taken in the task,
  m_start = ``anneal_start`` (0.99: mean teacher's ramp-up value), m_end = ``ema_ratio``,
  K = ``anneal_steps`` (k is capped at K). K is a parameter because a method does not see the
  loop's epochs or batch size; the default 100 is about one task of the default split_digits
  config (≈270 samples, batch 32, 10 epochs: 90 steps). k restarts at 0 every task.
- ``swa``:    θ_T ← (n·θ_T + θ_S)/(n+1), n = snapshots averaged so far (Izmailov et al. 2018,
  UAI, eq. 2), one snapshot every ``swa_every`` optimizer steps of a task. The first snapshot
  replaces the initial teacher (n = 0), so after n snapshots the teacher is their plain mean. n runs
  over the whole sequence of tasks. Izmailov et al. average once per epoch/cycle; per step is
  the finest choice and the loop's epoch boundaries are not visible to a method.
- ``frozen``: the student as it was when the task started (no averaging; an LwF over all logits).
- ``swap``:   ``frozen``, re-taken from the student every ``swa_every`` optimizer steps of a task as well (the
  masked-model study's "reference model basic swap and freeze": its loop replaces the frozen reference by a copy of
  the student every ``method_epoch`` = 5 epochs; a method does not see epochs, so the period is in steps).
- ``anneal_mmengine``: the EMA with mmengine's ``MomentumAnnealingEMA`` schedule, the masked-model study's 'anne'
  mode. mmengine's momentum is the student's share, max(μ, γ/(γ + k)); in this module's convention
  m_k = min(``ema_ratio``, k/(γ + k)) with γ = ``anneal_steps``, k = steps already taken in the task (so the
  teacher is the student at the first step and slows down to ``ema_ratio``; mmengine counts k over the whole run).

Momentum convention: ``ema_ratio`` is the teacher's share m. mmengine's (and so the masked-model study's
``ema_ratio``) is the student's, 1 − m: the study's 0.1 is ``ema_ratio: 0.9`` here.

The teacher is a copy of the student made when the run starts (the method is built on the
initial weights at task 0) and persists across tasks in ``state_dict``. Every floating-point
entry of the model's state dict is averaged (BatchNorm statistics included, as timm's
ModelEmaV2 does); the teacher runs in eval mode.

``cls_only`` distils through the classifier head only: both sides see the student's
features f = backbone_S(x) with the gradient stopped, and the term is
KL(head_T(f) ‖ head_S(f)). So the distillation moves only the student's head towards the
teacher's head; the backbone learns from the cross-entropy alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clgrid.methods.base import Method, TaskData, register
from clgrid.methods.parts.distillation import distillation_loss, frozen_copy

TEACHER_MODES = ("ema", "anneal", "swa", "frozen", "swap", "anneal_mmengine")


def cosine_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """BYOL's schedule from ``start`` (step 0) to ``end`` (step ≥ ``total_steps``)."""
    k = min(step, total_steps)
    return end - (end - start) * (math.cos(math.pi * k / total_steps) + 1) / 2


def mmengine_annealed_momentum(step: int, gamma: int, ema_ratio: float) -> float:
    """mmengine's MomentumAnnealingEMA as a teacher share: 1 − max(1 − ``ema_ratio``, γ/(γ + k))."""
    return min(ema_ratio, step / (gamma + step))


class AveragedTeacher:
    """A frozen copy of the student whose weights follow an average of the student's weights."""

    def __init__(self, student: nn.Module, mode: str, ema_ratio: float, anneal_start: float, anneal_steps: int,
                 swa_every: int):
        if mode not in TEACHER_MODES:
            raise ValueError(f"unknown teacher '{mode}'; valid: {', '.join(TEACHER_MODES)}")
        if anneal_steps < 1 or swa_every < 1:
            raise ValueError(f"anneal_steps ({anneal_steps}) and swa_every ({swa_every}) must be at least 1")
        self.mode, self.ema_ratio, self.anneal_start = mode, ema_ratio, anneal_start
        self.anneal_steps, self.swa_every = anneal_steps, swa_every
        self.model = frozen_copy(student)
        self.task_step = 0  # optimizer steps taken in the current task
        self.n_averaged = 0  # swa snapshots in the average so far
        self._paired: tuple | None = None  # (student, teacher floats, student floats, teacher rest, student rest)

    @torch.no_grad()
    def start_task(self, student: nn.Module) -> None:
        self.task_step = 0
        self._paired = None
        if self.mode in ("frozen", "swap"):
            self.model.load_state_dict(student.state_dict())

    def momentum(self) -> float:
        """m of the next EMA update (the anneal schedule at the current step)."""
        if self.mode == "anneal":
            return cosine_momentum(self.task_step, self.anneal_steps, self.anneal_start, self.ema_ratio)
        if self.mode == "anneal_mmengine":
            return mmengine_annealed_momentum(self.task_step, self.anneal_steps, self.ema_ratio)
        return self.ema_ratio

    def paired_tensors(self, student: nn.Module) -> tuple[list[torch.Tensor], ...]:
        """(teacher floats, student floats, teacher others, student others): the state-dict entries of both models
        paired by name, built at the first update of a task and reused at every step after it.

        ``keep_vars``: the ``Parameter`` objects themselves, not detached views. The loop's channels-last layout
        swaps a parameter's data in place of the same object after ``start_task``; a view taken before would go on
        reading the old memory. Built at the first update, after the loop has set the layout; reset each task.
        """
        if self._paired is None or self._paired[0] is not student:
            student_state = student.state_dict(keep_vars=True)
            pairs = [(t, student_state[n]) for n, t in self.model.state_dict(keep_vars=True).items()]
            floats = [(t, s) for t, s in pairs if t.is_floating_point()]
            others = [(t, s) for t, s in pairs if not t.is_floating_point()]
            self._paired = (student, [t for t, _ in floats], [s for _, s in floats],
                            [t for t, _ in others], [s for _, s in others])
        return self._paired[1:]

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One optimizer step was taken: move the teacher towards the student.

        One ``torch._foreach_*`` call per arithmetic step over all tensors, not a Python loop of small ops per
        tensor. On the CPU a foreach op applies the same per-tensor op in turn, so the teacher is the per-tensor
        formula's bit for bit: m·t then + (1−m)·s (``ema``, ``anneal``), n·t then + s then ÷ (n+1) (``swa``).
        """
        if self.mode == "swap" and (self.task_step + 1) % self.swa_every == 0:
            self.model.load_state_dict(student.state_dict())
        averaging = self.mode in ("ema", "anneal", "anneal_mmengine") or \
            (self.mode == "swa" and (self.task_step + 1) % self.swa_every == 0)
        if averaging:
            teacher_floats, student_floats, teacher_rest, student_rest = self.paired_tensors(student)
            if teacher_floats and self.mode == "swa":
                n = self.n_averaged
                torch._foreach_mul_(teacher_floats, n)
                torch._foreach_add_(teacher_floats, student_floats)
                torch._foreach_div_(teacher_floats, n + 1)
            elif teacher_floats:
                m = self.momentum()
                torch._foreach_mul_(teacher_floats, m)
                torch._foreach_add_(teacher_floats, student_floats, alpha=1 - m)
            if teacher_rest:  # integer buffers (BatchNorm's batch count) follow the student
                torch._foreach_copy_(teacher_rest, student_rest)
            if self.mode == "swa":
                self.n_averaged += 1
        self.task_step += 1

    def state_dict(self) -> dict[str, Any]:
        # A frozen teacher is the student at task start, which the job saves already.
        weights = None if self.mode == "frozen" else {n: t.clone() for n, t in self.model.state_dict().items()}
        return {"weights": weights, "n_averaged": self.n_averaged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["weights"] is not None:
            self.model.load_state_dict(state["weights"])  # copies onto the teacher's (the model's) device
        self.n_averaged = int(state["n_averaged"])


def teacher_from_params(student: nn.Module, params: dict[str, Any]) -> AveragedTeacher:
    return AveragedTeacher(student, params["teacher"], float(params["ema_ratio"]), float(params["anneal_start"]),
                           int(params["anneal_steps"]), int(params["swa_every"]))


@register("kd_ema")
class KDEMA(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "teacher": {
            "description": ("how the teacher follows the student after each optimizer step: ema (momentum ema_ratio), "
                            "anneal (momentum rises from anneal_start to ema_ratio on BYOL's cosine schedule over "
                            "anneal_steps, per task), swa (running mean of a snapshot every swa_every steps), frozen "
                            "(the student at task start), swap (frozen, re-taken every swa_every steps), "
                            "anneal_mmengine (momentum min(ema_ratio, k/(anneal_steps + k)) at step k of the task: "
                            "mmengine's MomentumAnnealingEMA)"),
            "enum": ["ema", "anneal", "swa", "frozen", "swap", "anneal_mmengine"], "default": "ema",
        },
        "ema_ratio": {
            "description": ("EMA momentum m in θ_T ← m·θ_T + (1−m)·θ_S (0.999: Tarvainen & Valpola 2017); anneal's end "
                            "value"),
            "type": "number", "minimum": 0, "maximum": 1, "default": 0.999,
        },
        "anneal_start": {
            "description": "anneal's momentum at the first step of each task (0.99: mean teacher's ramp-up value)",
            "type": "number", "minimum": 0, "maximum": 1, "default": 0.99,
        },
        "anneal_steps": {
            "description": ("optimizer steps K over which anneal's momentum rises to ema_ratio (then held); "
                            "anneal_mmengine: its γ"),
            "type": "integer", "minimum": 1, "default": 100,
        },
        "swa_every": {
            "description": ("swa takes a snapshot of the student every this many optimizer steps of a task; swap "
                            "replaces its frozen teacher by the student as often"),
            "type": "integer", "minimum": 1, "default": 1,
        },
        "kd_weight": {
            "description": ("weight λ of the distillation term T²·KL(teacher ‖ student); masked_kd: student on masked "
                            "features"),
            "type": "number", "minimum": 0, "default": 1.0,
        },
        "temperature": {
            "description": "distillation temperature T (2 as in Li & Hoiem 2017)",
            "type": "number", "exclusiveMinimum": 0, "default": 2.0,
        },
        "cls_only": {
            "description": ("distil the head only, KL(head_T(f) ‖ head_S(f)) on the student's features f with gradient "
                            "stopped"),
            "type": "boolean", "default": False,
        },
    }
    FACTS: dict[str, Any] = {"paper": "Tarvainen & Valpola 2017, NeurIPS", "state_weights": 1}  # the teacher

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        self.teacher = teacher_from_params(model, self.params)

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        self.teacher.start_task(self.model)

    def distillation_pair(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(student logits, teacher logits) that the distillation term compares."""
        if self.params["cls_only"]:
            features = self.model.features(x).detach()
            with torch.no_grad():
                teacher_logits = self.teacher.model.head(features)
            return self.model.head(features), teacher_logits
        with torch.no_grad():
            teacher_logits = self.teacher.model(x)
        return logits, teacher_logits

    def loss(self, x, y, logits):
        task_loss = F.cross_entropy(logits, y)
        if self.params["kd_weight"] == 0:
            return task_loss
        student_logits, teacher_logits = self.distillation_pair(x, logits)
        distill = distillation_loss(student_logits, teacher_logits, self.params["temperature"])
        return task_loss + self.params["kd_weight"] * distill

    def after_step(self) -> None:
        self.teacher.update(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.teacher.load_state_dict(state["teacher"])

    def task_state(self) -> dict[str, Any]:
        # A frozen teacher's weights are the task-start student, which before_task restores on resume.
        weights = {n: t.clone() for n, t in self.teacher.model.state_dict().items()}
        return {"task_step": self.teacher.task_step, "teacher_weights": weights}

    def load_task_state(self, state: dict[str, Any]) -> None:
        self.teacher.task_step = int(state["task_step"])
        self.teacher.model.load_state_dict(state["teacher_weights"])
