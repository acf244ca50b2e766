"""L2 penalty toward an anchor: the L2-SP regulariser (Li, Grandvalet & Davoine 2018, ICML).

    L(θ) = L_t(θ) + (λ/2) ‖θ − θ₀‖²

over the trainable weights. The anchor θ₀ is, by ``anchor``:
- ``init``: the weights when the run's first task started (the initial or
  pretrained weights): L2-SP's "starting point", kept for the whole run, so it
  is stored in the method state and carried from job to job;
- ``task_start``: the weights when the current task started (the previous
  task's result), the "L2" baseline of Kirkpatrick et al. 2017 (fig. 2) and the
  optional L2 term of ZSCL (Zheng et al. 2023). Needs no state: the next job
  starts from exactly those weights.
In the first task the two coincide.

Default λ = 0.01. Li et al. select their α (the same λ/2·‖θ − θ₀‖² weight)
by cross-validation on a logarithmic grid; 0.01 is within that range, about
20× the usual weight decay (5e-4) toward zero that L2-SP replaces. It has not
been tuned here: set it per benchmark. L2-SP's separate β-decay of the new
head is left out: in this project the head is shared by all tasks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register
from clgrid.methods.parts.flat import FlatLayout, squared_distance

ANCHORS = ("init", "task_start")


@register("l2_init")
class L2Init(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "l2_lambda": {
            "description": "λ of the penalty (λ/2)‖θ − θ₀‖² (α of L2-SP, Li et al. 2018; untuned project default)",
            "type": "number", "minimum": 0, "default": 0.01,
        },
        "anchor": {
            "description": ("θ₀: init (the weights when the run's first task started, e.g. pretrained; L2-SP) or "
                            "task_start (the weights when the current task started)"),
            "enum": ["init", "task_start"], "default": "init",
        },
    }
    FACTS: dict[str, Any] = {"paper": "Li, Grandvalet & Davoine 2018, ICML", "state_weights": 1}  # the anchor

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        if self.params["anchor"] not in ANCHORS:
            raise ValueError(f"unknown l2_init anchor '{self.params['anchor']}'; valid: {', '.join(ANCHORS)}")
        # θ₀ as one flat vector over the trainable weights; the dicts are its per-name views (the state's format).
        self.layout = FlatLayout([(n, p) for n, p in model.named_parameters() if p.requires_grad])
        self.init_flat: torch.Tensor | None = None  # θ at the first task's start (anchor ``init``)
        self.anchor_flat: torch.Tensor | None = None  # θ₀ used in the current task
        self.init_weights: dict[str, torch.Tensor] = {}
        self.anchor_weights: dict[str, torch.Tensor] = {}

    def trainable(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        with torch.no_grad():
            current = self.layout.flatten(self.trainable())
        if self.params["anchor"] == "task_start":
            self.anchor_flat = current
        else:
            if self.init_flat is None:  # first task of the run: no state was loaded
                self.init_flat = current
                self.init_weights = self.layout.named_views(current)
            self.anchor_flat = self.init_flat
        self.anchor_weights = self.layout.named_views(self.anchor_flat)

    def penalty(self) -> torch.Tensor:
        """½ ‖θ − θ₀‖² over the anchored weights, without λ; zero at the anchor."""
        if self.anchor_flat is None:
            return torch.zeros((), device=self.device)
        return squared_distance(self.layout, self.trainable(), [self.anchor_flat], scale=0.5)

    def loss(self, x, y, logits):
        return F.cross_entropy(logits, y) + self.params["l2_lambda"] * self.penalty()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "init_weights": self.init_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["init_weights"]:
            self.init_flat = self.layout.flatten_named(state["init_weights"], "L2 anchor").to(self.device)
            self.init_weights = self.layout.named_views(self.init_flat)
        else:
            self.init_flat, self.init_weights = None, {}
