"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017, ICML, sec. 3, eqs. 4 and 5).

During task μ each weight k accumulates its share of the drop in the task loss
along the training path (the path integral of its gradient, discretised per
optimizer step):

    ω_k^μ = −Σ_steps g_k · Δθ_k          g: gradient of the *task* loss L_μ

At the end of the task it becomes an importance, normalised by how far the
weight moved over the whole task (eq. 5), summed over tasks:

    Ω_k^μ = Σ_{ν≤μ} ω_k^ν / ((θ_k(t^ν) − θ_k(t^{ν−1}))² + ξ)

and the next tasks train on (eq. 4)

    L̃ = L_μ(θ) + c Σ_k Ω_k (θ̃_k − θ_k)²        θ̃: weights after the latest task.

Choices, and why:
- g is the gradient of the unregularised task loss L_μ, as in the paper's
  derivation (ω is the path integral of L_μ's gradient) and its reference code
  (ganguli-lab/pathint, ``unreg_grads`` in ``protocols.PATH_INT_PROTOCOL``).
  The loop back-propagates the total loss, so ``after_backward`` removes the
  penalty's gradient, known in closed form, 2cΩ(θ − θ̃), rather than paying a
  second backward pass. (Some
  re-implementations use the total gradient; they then credit weights for
  moving back toward θ̃.) Optimizer momentum and weight decay enter only
  through Δθ, which is the step the optimizer actually took.
- Ω is clipped at zero after each task, as the reference code does
  (``tf.nn.relu`` on the updated Ω): a negative importance would reward moving
  away from θ̃ and make the penalty unbounded below.
- Every parameter of the model has an Ω, frozen ones included: a weight that
  never moves gets ω = 0, so Ω = 0/(0 + ξ) = 0 exactly.

Defaults c = 1 (the split-MNIST value of the reference code, ``fig_split_mnist``
notebook: ``cvals = [0, 1.0]``) and ξ = 0.1 (the reference code's permuted-MNIST
damping; split MNIST there uses ξ = 1e-3). Measured on the default digits grid
(SGD, lr 0.05, momentum 0.9): with ξ = 1e-3 weights that oscillate but end near
where they started get Ω ≈ ω/1e-3, the penalty's curvature 2cΩ exceeds what the
step size tolerates and training diverges at task 2 for c ≥ 0.1 (caught by the
loop's finite-loss check); with ξ = 0.1 and c = 1 permuted-digits forgetting is
21 % against naive's 75 %. The paper trained with Adam at lr 1e-3.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register
from clgrid.methods.parts.flat import FlatLayout, squared_distance


@register("si")
class SynapticIntelligence(Method):
    """Every quantity is one flat vector over all parameters (``FlatLayout``), so a step costs a few vector ops;
    the per-name dicts (``importance``, ``anchor``, ``path_integral``, ``before_step``) are views of them."""

    PARAMS: dict[str, dict[str, Any]] = {
        "c": {
            "description": "strength c of the penalty c Σ Ω(θ − θ̃)² (Zenke et al. 2017, eq. 4; split MNIST uses 1)",
            "type": "number", "minimum": 0, "default": 1,
        },
        "xi": {
            "description": ("damping ξ in Ω += ω / (Δθ² + ξ) (Zenke et al. 2017, eq. 5; the reference code uses 0.1 on "
                            "permuted and 1e-3 on split MNIST with Adam; 1e-3 diverges with the default SGD lr 0.05, "
                            "momentum 0.9)"),
            "type": "number", "exclusiveMinimum": 0, "default": 0.1,
        },
    }
    FACTS: dict[str, Any] = {"paper": "Zenke, Poole & Ganguli 2017, ICML", "state_weights": 2}  # importance, anchor

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        self.layout = FlatLayout(list(model.named_parameters()))
        self.importance_flat: torch.Tensor | None = None  # Ω
        self._penalty_curvature: torch.Tensor | None = None  # 2cΩ
        self.anchor_flat: torch.Tensor | None = None  # θ̃, the weights after the latest task
        # Within one task only (reset in before_task, saved only in in-job checkpoints):
        self.path_integral_flat: torch.Tensor | None = None  # ω
        self.task_start_flat: torch.Tensor | None = None  # θ(t^{μ−1})
        self.before_step_flat: torch.Tensor | None = None  # θ before the current optimizer step
        self.task_grad_flat: torch.Tensor | None = None  # g of the current step (0 where a parameter has none)
        self._task_grad_pieces: list[torch.Tensor] = []  # its per-parameter views, written by after_backward
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.path_integral: dict[str, torch.Tensor] = {}
        self.before_step: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _weights(self) -> torch.Tensor:
        return self.layout.flatten(list(self.model.parameters()))

    def _set_importance(self, importance: torch.Tensor, anchor: torch.Tensor) -> None:
        self.importance_flat, self.anchor_flat = importance, anchor
        self._penalty_curvature = 2 * self.params["c"] * importance  # 2cΩ: fixed while a task trains
        self.importance, self.anchor = self.layout.named_views(importance), self.layout.named_views(anchor)

    def _set_task_state(self, path_integral: torch.Tensor, before_step: torch.Tensor) -> None:
        self.path_integral_flat, self.before_step_flat = path_integral, before_step
        self.path_integral = self.layout.named_views(path_integral)
        self.before_step = self.layout.named_views(before_step)

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        self.task_start_flat = self._weights()
        self._set_task_state(torch.zeros_like(self.task_start_flat), self.task_start_flat.clone())
        self.task_grad_flat = torch.zeros_like(self.task_start_flat)
        self._task_grad_pieces = self.layout.views(self.task_grad_flat)

    def penalty(self) -> torch.Tensor:
        """Σ_k Ω_k (θ_k − θ̃_k)², without c; zero at the anchor."""
        return squared_distance(self.layout, list(self.model.parameters()), [self.anchor_flat],
                                [self.importance_flat])

    def loss(self, x, y, logits):
        task_loss = F.cross_entropy(logits, y)
        if self.importance_flat is None:
            return task_loss
        return task_loss + self.params["c"] * self.penalty()

    @torch.no_grad()
    def after_backward(self) -> None:
        """Keep the task-loss gradient: p.grad minus the penalty's gradient 2cΩ(θ − θ̃)."""
        grads = [p.grad for p in self.model.parameters()]
        pieces = self._task_grad_pieces
        if all(g is not None for g in grads):
            torch._foreach_copy_(pieces, grads)
        else:
            # A parameter without a gradient (frozen, or unused this step) is not stepped: its Δθ is 0, so the
            # zero (or corrected) entry adds nothing to ω, as skipping it would.
            self.task_grad_flat.zero_()
            live = [i for i, g in enumerate(grads) if g is not None]
            if live:
                torch._foreach_copy_([pieces[i] for i in live], [grads[i] for i in live])
        if self.importance_flat is not None:
            self.task_grad_flat -= self._penalty_curvature * (self._weights() - self.anchor_flat)

    @torch.no_grad()
    def after_step(self) -> None:
        """ω_k −= g_k · Δθ_k for the step just taken."""
        weights = self._weights()
        self.path_integral_flat -= self.task_grad_flat * (weights - self.before_step_flat)
        self.before_step_flat.copy_(weights)

    @torch.no_grad()
    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        weights = self._weights()
        moved = weights - self.task_start_flat
        new = self.path_integral_flat / (moved**2 + self.params["xi"])
        importance = new if self.importance_flat is None else self.importance_flat + new
        self._set_importance(importance.clamp(min=0), weights)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "importance": self.importance, "anchor": self.anchor}

    def task_state(self) -> dict[str, Any]:
        return {"path_integral": self.path_integral, "before_step": self.before_step}

    def load_task_state(self, state: dict[str, Any]) -> None:
        self._set_task_state(self._load(state["path_integral"], "SI path integral"),
                             self._load(state["before_step"], "SI step start"))

    def _load(self, named: dict[str, torch.Tensor], what: str) -> torch.Tensor:
        return self.layout.flatten_named(named, what).to(self.device)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["importance"]:
            self._set_importance(self._load(state["importance"], "SI importance"),
                                 self._load(state["anchor"], "SI anchor"))
        else:
            self.importance_flat = self.anchor_flat = self._penalty_curvature = None
            self.importance, self.anchor = {}, {}
