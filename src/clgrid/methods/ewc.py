"""Elastic Weight Consolidation (Kirkpatrick et al. 2017, PNAS, eq. 3).

    L(θ) = L_t(θ) + Σ_{k<t} (λ/2) Σ_j F_{k,j} (θ_j − θ*_{k,j})²

θ*_k are the weights after task k and F_k the diagonal of the *empirical* Fisher
at θ*_k: the mean over task-k training samples of the squared gradient of
log p(y | x; θ) at the true label (``fisher_weighting`` chooses another estimator:
weighted by p(y|x), or at the model's own prediction). One penalty per past task; ``ewc_online``
below is the variant with one running Fisher and one anchor (Schwarz et al. 2018).

Default λ = 100: this project's EWC default (Kirkpatrick et al. choose λ per
benchmark by search; the paper gives no single value).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register, take
from clgrid.methods.parts.flat import FlatLayout, squared_distance


def empirical_fisher_diag(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                          weighting: str = "none") -> dict[str, torch.Tensor]:
    """Mean of squared per-sample gradients of log p(y|x), per trainable parameter (non-negative).

    A per-sample autograd loop rather than ``torch.func.vmap``: vmap's backward
    imports ``torch._dynamo`` (about 1.8 s per job), more than the loop costs on
    the small models where EWC is usually run; cap it with ``fisher_samples``.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    layout = FlatLayout(named)
    return layout.named_views(_fisher_flat(model, layout, [p for _, p in named], x, y, weighting))


def _fisher_flat(model, layout: FlatLayout, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 weighting: str) -> torch.Tensor:
    """``empirical_fisher_diag`` as one flat vector: each sample's squares added with one ``_foreach`` call."""
    fisher = torch.zeros(layout.numel, device=params[0].device, dtype=params[0].dtype)
    pieces = layout.views(fisher)
    was_training = model.training
    model.eval()
    for i in range(len(y)):
        # x may be host-resident (data placement host): each sample goes to the model's device.
        logits = model(x[i : i + 1].to(params[0].device))
        # predicted_label: the gradient at the model's own prediction argmax p(·|x), not at the true label, as the
        # "Intro to continual learning" EWC tutorial computes it (label = output.max(1)[1]; its nll_loss is −log p,
        # the same square). Other weightings take the true label y_i.
        label = logits.detach().argmax(dim=-1)[0] if weighting == "predicted_label" else y[i]
        log_likelihood = F.log_softmax(logits, dim=-1)[0, label]
        grads = torch.autograd.grad(log_likelihood, params)
        squares = torch._foreach_mul(grads, grads)  # g² as g**2 computes it: bit-identical sums
        # true_class_prob: each sample's squared gradient weighted by p(y|x), as the DER paper's code computes
        # online EWC's Fisher (Mammoth ewc_on.py, exp_cond_prob); hard samples, with large gradients, count less.
        if weighting == "true_class_prob":
            torch._foreach_mul_(squares, float(log_likelihood.detach().exp()))
        torch._foreach_add_(pieces, squares)
    model.train(was_training)
    return fisher / len(y)


def ewc_penalty(
    model: torch.nn.Module, fisher_diags: list[dict[str, torch.Tensor]], anchors: list[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """Σ_k ½ Σ_j F_{k,j}(θ_j − θ*_{k,j})², without λ; zero at every anchor with its own Fisher.

    The formula per parameter, for reading and for tests; the methods compute it on flat vectors
    (``squared_distance``), with the same gradients.
    """
    penalty = torch.zeros((), device=next(model.parameters()).device)
    named = dict(model.named_parameters())
    for fisher, anchor in zip(fisher_diags, anchors):
        for n, f in fisher.items():
            penalty = penalty + 0.5 * (f * (named[n] - anchor[n]) ** 2).sum()
    return penalty


def _fisher_samples(task: TaskData, limit: int | None, generator: torch.Generator | None):
    """``task``'s training samples, or at most ``limit`` of them drawn with ``generator``."""
    x, y = task.x, task.y
    if limit and limit < len(y):
        pick = torch.randperm(len(y), generator=generator)[:limit].to(y.device)
        x, y = take(x, pick), y[pick]
    return x, y


def task_fisher(model: torch.nn.Module, task: TaskData, limit: int | None, generator: torch.Generator | None,
                weighting: str = "none"):
    """Empirical Fisher diagonal on ``task``'s training data, on at most ``limit`` samples drawn with ``generator``."""
    return empirical_fisher_diag(model, *_fisher_samples(task, limit, generator), weighting)


class _FlatEWC(Method):
    """What both EWCs share: the trainable weights' layout, and Fishers and anchors kept as flat vectors whose
    per-parameter views are the state's dicts (the checkpoint format is unchanged)."""

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        self.layout = FlatLayout([(n, p) for n, p in model.named_parameters() if p.requires_grad])

    def trainable(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def task_end_fisher(self, task: TaskData) -> torch.Tensor:
        x, y = _fisher_samples(task, self.params.get("fisher_samples"), self.generator)
        return _fisher_flat(self.model, self.layout, self.trainable(), x, y, self.params["fisher_weighting"])

    @torch.no_grad()
    def current_weights(self) -> torch.Tensor:
        return self.layout.flatten(self.trainable())

    def load_flat(self, named: dict[str, torch.Tensor], what: str) -> torch.Tensor:
        return self.layout.flatten_named(named, what).to(self.device)


@register("ewc")
class EWC(_FlatEWC):
    PARAMS: dict[str, dict[str, Any]] = {
        "ewc_lambda": {
            "description": "λ of Kirkpatrick et al. 2017, eq. 3",
            "type": "number", "minimum": 0, "default": 100,
        },
        "fisher_samples": {
            "description": "training samples used for the Fisher diagonal (null = all)",
            "type": ["integer", "null"], "minimum": 1, "default": None,
        },
        "fisher_weighting": {
            "description": ("none (the empirical Fisher: mean squared gradient of log p(y|x) at the true label y), "
                            "true_class_prob (each sample's squared gradient weighted by p(y|x), as the DER paper's "
                            "code computes online EWC's Fisher) or predicted_label (the squared gradient of "
                            "log p(ŷ|x) at the model's own prediction ŷ = argmax p(·|x), unweighted, as the 'Intro to "
                            "continual learning' EWC tutorial computes it)"),
            "enum": ["none", "true_class_prob", "predicted_label"], "default": "none",
        },
    }
    FACTS: dict[str, Any] = {"paper": "Kirkpatrick et al. 2017, PNAS", "state_weights": {"per_task": 2}}

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        self.fisher_flat: list[torch.Tensor] = []  # F_k, one flat vector per past task
        self.anchor_flat: list[torch.Tensor] = []  # θ*_k
        self.fisher_diags: list[dict[str, torch.Tensor]] = []  # the same, per parameter name (views)
        self.anchors: list[dict[str, torch.Tensor]] = []

    def penalty(self) -> torch.Tensor:
        """Σ_k ½ Σ_j F_{k,j}(θ_j − θ*_{k,j})² on flat vectors, without λ (``ewc_penalty`` per parameter)."""
        return squared_distance(self.layout, self.trainable(), self.anchor_flat, self.fisher_flat, scale=0.5)

    def loss(self, x, y, logits):
        task_loss = F.cross_entropy(logits, y)
        if not self.fisher_flat:
            return task_loss
        return task_loss + self.params["ewc_lambda"] * self.penalty()

    def _append(self, fisher: torch.Tensor, anchor: torch.Tensor) -> None:
        self.fisher_flat.append(fisher)
        self.anchor_flat.append(anchor)
        self.fisher_diags.append(self.layout.named_views(fisher))
        self.anchors.append(self.layout.named_views(anchor))

    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        self._append(self.task_end_fisher(task), self.current_weights())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fisher_diags": self.fisher_diags, "anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.fisher_flat, self.anchor_flat, self.fisher_diags, self.anchors = [], [], [], []
        for fisher, anchor in zip(state["fisher_diags"], state["anchors"]):
            self._append(self.load_flat(fisher, "EWC Fisher"), self.load_flat(anchor, "EWC anchor"))


@register("ewc_online")
class OnlineEWC(_FlatEWC):
    """Online EWC (Schwarz et al. 2018, "Progress & Compress", ICML: the EWC step of the compress phase).

    One running Fisher and one anchor instead of one penalty per task:

        F*_t = γ F*_{t−1} + F_t        (F_t: empirical Fisher at θ*_t on task t)
        L(θ) = L_t(θ) + (λ/2) Σ_j γ F*_{t−1,j} (θ_j − θ*_{t−1,j})²

    θ*_{t−1} is the weights after the latest task. As in the paper (and in the
    reference code of van de Ven et al., GMvandeVen/continual-learning, where
    ``ewc_loss`` multiplies the stored sum by γ), the penalty uses γ·F*: the
    previous tasks' Fisher is down-weighted once more while the new task trains.
    γ = 1 (the default ``gamma = 1.`` of that reference code) makes F* the plain
    sum of Fishers with only the last anchor; γ < 1 forgets old tasks' importance
    geometrically (Schwarz et al. tune γ per domain). λ = 100 as this project's ``ewc``.
    Memory is one Fisher and one anchor, whatever the number of tasks.
    """

    PARAMS: dict[str, dict[str, Any]] = {
        "ewc_lambda": {
            "description": "λ of the penalty (λ/2) Σ γF*(θ − θ*)² (Schwarz et al. 2018); project default as ewc",
            "type": "number", "minimum": 0, "default": 100,
        },
        "gamma": {
            "description": ("decay γ of the running Fisher F* ← γF* + F_t (1 = sum of Fishers; van de Ven et al. "
                            "reference code)"),
            "type": "number", "minimum": 0, "maximum": 1, "default": 1,
        },
        "fisher_samples": {
            "description": "training samples used for each task's Fisher diagonal (null = all)",
            "type": ["integer", "null"], "minimum": 1, "default": None,
        },
        "fisher_weighting": {
            "description": ("none (the empirical Fisher: mean squared gradient of log p(y|x) at the true label y), "
                            "true_class_prob (each sample's squared gradient weighted by p(y|x), as the DER paper's "
                            "code computes online EWC's Fisher) or predicted_label (the squared gradient of "
                            "log p(ŷ|x) at the model's own prediction ŷ = argmax p(·|x), unweighted, as the 'Intro to "
                            "continual learning' EWC tutorial computes it)"),
            "enum": ["none", "true_class_prob", "predicted_label"], "default": "none",
        },
    }
    FACTS: dict[str, Any] = {"paper": "Schwarz et al. 2018, ICML", "state_weights": 2}  # a running Fisher and an anchor

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        self.running_fisher: dict[str, torch.Tensor] = {}  # F*, per parameter name: views of the flat vectors
        self.anchor: dict[str, torch.Tensor] = {}
        self.running_flat: torch.Tensor | None = None
        self.anchor_flat: torch.Tensor | None = None
        self.decayed_flat: torch.Tensor | None = None  # γF*, what the penalty weighs with (fixed during a task)

    def _set(self, fisher: torch.Tensor, anchor: torch.Tensor) -> None:
        self.running_flat, self.anchor_flat = fisher, anchor
        self.decayed_flat = self.params["gamma"] * fisher
        self.running_fisher, self.anchor = self.layout.named_views(fisher), self.layout.named_views(anchor)

    def penalty(self) -> torch.Tensor:
        """½ Σ_j γ F*_j (θ_j − θ*_j)², without λ; zero at the anchor."""
        return squared_distance(self.layout, self.trainable(), [self.anchor_flat], [self.decayed_flat], scale=0.5)

    def loss(self, x, y, logits):
        task_loss = F.cross_entropy(logits, y)
        if self.running_flat is None:
            return task_loss
        return task_loss + self.params["ewc_lambda"] * self.penalty()

    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        fisher = self.task_end_fisher(task)
        if self.running_flat is not None:
            fisher = self.params["gamma"] * self.running_flat + fisher
        self._set(fisher, self.current_weights())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "running_fisher": self.running_fisher, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["running_fisher"]:
            self._set(self.load_flat(state["running_fisher"], "online EWC Fisher"),
                      self.load_flat(state["anchor"], "online EWC anchor"))
        else:
            self.running_flat = self.anchor_flat = self.decayed_flat = None
            self.running_fisher, self.anchor = {}, {}
