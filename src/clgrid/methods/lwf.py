"""Learning without Forgetting (Li & Hoiem 2017, TPAMI, eq. 2 with temperature).

    L = CE(z, y) + α · T² · KL(softmax(z_old / T) ‖ softmax(z / T))

over the logits of the classes seen before the current task, with z_old from a
frozen copy of the model taken when the task starts (the weights the previous
task's job saved, so the checkpoint need not store them twice). KL rather than
soft cross-entropy makes the term exactly zero when the two models agree.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register
from clgrid.methods.parts.distillation import distillation_loss, frozen_copy


@register("lwf")
class LwF(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "lwf_alpha": {
            "description": "weight of the distillation term (Li & Hoiem 2017 use 1)",
            "type": "number", "minimum": 0, "default": 1,
        },
        "temperature": {
            "description": "distillation temperature T (Li & Hoiem 2017 use 2)",
            "type": "number", "exclusiveMinimum": 0, "default": 2,
        },
    }
    FACTS: dict[str, Any] = {"paper": "Li & Hoiem 2017, TPAMI"}

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        self.old_model: torch.nn.Module | None = None
        self.old_classes: torch.Tensor | None = None  # seen_classes as an index on the device, built per task

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        self.old_model, self.old_classes = None, None
        if self.seen_classes:
            self.old_model = frozen_copy(self.model)
            # Once per task: a host list turned into a device tensor at every step is a blocking copy per step.
            self.old_classes = torch.as_tensor(self.seen_classes, device=self.device)

    def loss(self, x, y, logits):
        task_loss = F.cross_entropy(logits, y)
        if self.old_model is None:
            return task_loss
        old = self.old_classes
        with torch.no_grad():
            old_logits = self.old_model(x)[:, old]
        distill = distillation_loss(logits[:, old], old_logits, self.params["temperature"])
        return task_loss + self.params["lwf_alpha"] * distill
