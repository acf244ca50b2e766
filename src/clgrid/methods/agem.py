"""Averaged Gradient Episodic Memory, A-GEM (Chaudhry et al. 2019, ICLR, "Efficient Lifelong Learning
with A-GEM", Sec. 4, the projected update).

With g the gradient of the current batch's loss and g_ref the gradient of the
loss on a random batch of the episodic memory (samples of earlier tasks), both
flattened over all trainable parameters, the step uses

    g̃ = g − (gᵀ g_ref / g_refᵀ g_ref) · g_ref   if gᵀ g_ref < 0,   else g,

the projection of g onto the half-space where the average memory loss does not
increase to first order (g̃ᵀ g_ref = 0 after projection). g_ref is computed with
``torch.autograd.grad`` so the current ``.grad`` is left alone until it is
replaced by g̃. The memory loss is cross-entropy over all logits (one shared
head; the paper's split benchmarks mask logits per task).

The memory keeps, for each class of each task, ``samples_per_class`` random
training samples, chosen at the end of the task; the memory grows with the
tasks. Defaults from the authors' code (facebookresearch/agem,
``fc_permute_mnist.py``): 25 samples per class and task (250 per 10-class task,
the paper's MNIST setting) and a reference batch of 256 memory samples drawn
without repeats (the whole memory when it is smaller).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register, take
from clgrid.methods.parts.flat import FlatLayout


def project_gradient(grad: torch.Tensor, grad_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's update: remove from ``grad`` its component against ``grad_ref`` when the two conflict."""
    dot = torch.dot(grad, grad_ref)
    if dot >= 0:
        return grad
    return grad - (dot / torch.dot(grad_ref, grad_ref)) * grad_ref


@register("agem")
class AGEM(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "samples_per_class": {
            "description": ("episodic-memory samples kept per class of each task (A-GEM code, facebookresearch/agem, "
                            "uses 25)"),
            "type": "integer", "minimum": 1, "default": 25,
        },
        "mem_batch_size": {
            "description": ("memory samples (drawn without repeats) for the reference gradient g_ref (A-GEM code uses "
                            "256)"),
            "type": "integer", "minimum": 1, "default": 256,
        },
    }
    FACTS: dict[str, Any] = {"paper": "Chaudhry et al. 2019, ICLR", "per_class_buffer_params": ["samples_per_class"]}

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        device = next(model.parameters()).device
        self.layout = FlatLayout([(n, p) for n, p in model.named_parameters() if p.requires_grad])
        self.memory_x: torch.Tensor | None = None
        self.memory_y = torch.empty(0, dtype=torch.long, device=device)
        self.memory_task = torch.empty(0, dtype=torch.long, device=device)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def reference_gradient(self) -> torch.Tensor:
        """Flattened gradient of the mean cross-entropy on a random memory batch."""
        # Drawn on the host from the task's generator (the same draws on every device); moved without waiting
        # for the device (a non_blocking copy of a pageable tensor returns once the driver has staged it), and not
        # at all for inputs kept in host memory.
        pick = torch.randperm(len(self.memory_y), generator=self.generator)[: int(self.params["mem_batch_size"])]
        pick_y = pick.to(self.memory_y.device, non_blocking=True)
        pick_x = pick_y if self.memory_x.device == pick_y.device else pick
        params = self.trainable()
        mem_loss = F.cross_entropy(self.model(self.on_compute(take(self.memory_x, pick_x))), self.memory_y[pick_y])
        grads = torch.autograd.grad(mem_loss, params, allow_unused=True)
        return FlatLayout.flatten([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)])

    def after_backward(self) -> None:
        """Project the flat gradient; write it back with one ``_foreach_copy_`` when it changed."""
        if len(self.memory_y) == 0:
            return
        params = self.trainable()
        grad = FlatLayout.flatten([torch.zeros_like(p) if p.grad is None else p.grad for p in params])
        projected = project_gradient(grad, self.reference_gradient())
        if projected is grad:
            return
        pieces = self.layout.views(projected)
        with torch.no_grad():
            if any(p.grad is None for p in params):  # a parameter this loss did not reach: it gets one now
                for p, piece in zip(params, pieces):
                    if p.grad is None:
                        p.grad = piece.clone()
            torch._foreach_copy_([p.grad for p in params], pieces)

    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        per_class = int(self.params["samples_per_class"])
        keep = []
        for c in task.y.unique().tolist():
            members = torch.nonzero(task.y == c).flatten().cpu()
            keep.append(members[torch.randperm(len(members), generator=self.generator)[:per_class]])
        keep = torch.cat(keep).to(task.y.device)
        new_task = torch.full((len(keep),), task.task_id, dtype=torch.long, device=task.y.device)
        kept = take(task.x, keep)
        self.memory_x = kept if self.memory_x is None else torch.cat([self.memory_x, kept])
        self.memory_y = torch.cat([self.memory_y, task.y[keep]])
        self.memory_task = torch.cat([self.memory_task, new_task])

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory_x": self.memory_x, "memory_y": self.memory_y,
                "memory_task": self.memory_task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = self.device
        self.memory_x = self.to_inputs_device(state["memory_x"])  # with the task's inputs (host or device)
        self.memory_y = state["memory_y"].to(device)
        self.memory_task = state["memory_task"].to(device)
