"""WiSE-FT: weight-space ensembling of the weights before and after fine-tuning (Wortsman et al. 2022, CVPR, eq. 1).

Each task is a fine-tuning run that starts from θ_start (the previous task's
result; the initial weights for the first task). With ``mode``:

- ``end_of_task`` (the paper): train as usual to θ_ft, then keep

      θ ← (1 − α) · θ_start + α · θ_ft

  α = 0 returns θ_start, α = 1 plain fine-tuning. Default α = 0.5, the fixed
  mixing coefficient the paper reports next to the one tuned per task.

- ``moving_average``: an exponential moving average of the weights along the
  task's training path, started at θ_start and updated after every optimizer step

      θ_avg ← β · θ_avg + (1 − β) · θ

  and loaded into the model at the end of the task (``alpha`` is not used).
  After n steps θ_start keeps weight βⁿ, so the average is pulled toward the
  start the way WiSE-FT's interpolation is, but along the path rather than on
  the segment between its ends (cf. the running weight average of ZSCL, Zheng
  et al. 2023). Default β = 0.999, the usual EMA-of-weights decay.

Training itself (and the gradients) are plain fine-tuning; the method acts on
the weights only. Every floating-point tensor of ``model.state_dict()`` is
ensembled (weights and float buffers such as BatchNorm statistics); tensors
that did not change during the task (frozen weights) are left bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch

from clgrid.methods.base import Method, TaskData, register

MODES = ("end_of_task", "moving_average")


@register("wise_ft")
class WiSEFT(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "alpha": {
            "description": "mixing α in θ ← (1 − α)θ_start + αθ_ft at each task's end (Wortsman et al. 2022 use 0.5)",
            "type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
        },
        "mode": {
            "description": ("end_of_task (interpolate start and fine-tuned weights with alpha) or moving_average (load "
                            "the EMA of the weights along the task's training path; alpha unused)"),
            "enum": ["end_of_task", "moving_average"], "default": "end_of_task",
        },
        "ema_decay": {
            "description": "β of θ_avg ← βθ_avg + (1 − β)θ after each step (mode moving_average)",
            "type": "number", "minimum": 0, "maximum": 1, "default": 0.999,
        },
    }
    FACTS: dict[str, Any] = {"paper": "Wortsman et al. 2022, CVPR"}

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        if self.params["mode"] not in MODES:
            raise ValueError(f"unknown wise_ft mode '{self.params['mode']}'; valid: {', '.join(MODES)}")
        self.start_weights: dict[str, torch.Tensor] = {}  # θ_start, within one task
        self.average_weights: dict[str, torch.Tensor] = {}  # θ_avg, mode moving_average, within one task
        self._paired: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # (θ_avg, θ) tensors, per task

    def _float_weights(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().clone() for n, t in self.model.state_dict().items() if t.is_floating_point()}

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        self.start_weights = self._float_weights()
        if self.params["mode"] == "moving_average":
            self.average_weights = self._float_weights()
        self._paired = None

    def _averaged_and_current(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """θ_avg's tensors and the model's, paired by name: built at the first step of a task (after the loop has
        set the model's layout) and reused; ``keep_vars`` holds the ``Parameter`` objects, whose data a layout
        change swaps in place, not views of their memory at the time."""
        if self._paired is None:
            current = self.model.state_dict(keep_vars=True)
            self._paired = (list(self.average_weights.values()), [current[n] for n in self.average_weights])
        return self._paired

    @torch.no_grad()
    def after_step(self) -> None:
        if self.params["mode"] != "moving_average" or not self.average_weights:
            return
        # θ_avg ← β·θ_avg + (1 − β)·θ in two foreach calls over all tensors: on the CPU the same mul_ then add_ per
        # tensor as a loop would run, so the same bits.
        beta = self.params["ema_decay"]
        averages, current = self._averaged_and_current()
        torch._foreach_mul_(averages, beta)
        torch._foreach_add_(averages, current, alpha=1 - beta)

    def task_state(self) -> dict[str, Any]:
        return {"average_weights": self.average_weights}

    def load_task_state(self, state: dict[str, Any]) -> None:
        self.average_weights = self.on_device(state["average_weights"])
        self._paired = None  # new tensors

    @torch.no_grad()
    def after_task(self, task: TaskData) -> None:
        alpha = self.params["alpha"]
        for n, weight in self.model.state_dict().items():
            if n not in self.start_weights:
                continue
            start = self.start_weights[n]
            if torch.equal(weight, start):  # never moved: keep it exactly (frozen weights stay frozen)
                continue
            if self.params["mode"] == "moving_average":
                weight.copy_(self.average_weights[n])
            else:
                weight.copy_((1 - alpha) * start + alpha * weight)
        self.start_weights, self.average_weights, self._paired = {}, {}, None
        super().after_task(task)  # class means (NCM head) from the ensembled weights
