"""Elastic Weight Consolidation (Kirkpatrick et al. 2017, PNAS, eq. 3).

    L(θ) = L_t(θ) + Σ_{k<t} (λ/2) Σ_j F_{k,j} (θ_j − θ*_{k,j})²

θ*_k are the weights after task k and F_k the diagonal of the *empirical* Fisher
at θ*_k: the mean over task-k training samples of the squared gradient of
log p(y | x; θ) at the true label. One penalty per past task; ``ewc_online``
below is the variant with one running Fisher and one anchor (Schwarz et al. 2018).

Default λ = 100: this project's EWC default (Kirkpatrick et al. choose λ per
benchmark by search; the paper gives no single value).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register, take, trainable_copy


def empirical_fisher_diag(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                          weighting: str = "none") -> dict[str, torch.Tensor]:
    """Mean of squared per-sample gradients of log p(y|x), per trainable parameter (non-negative).

    A per-sample autograd loop rather than ``torch.func.vmap``: vmap's backward
    imports ``torch._dynamo`` (about 1.8 s per job), more than the loop costs on
    the small models where EWC is usually run; cap it with ``fisher_samples``.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    fisher = {n: torch.zeros_like(p) for n, p in named}
    was_training = model.training
    model.eval()
    for i in range(len(y)):
        log_likelihood = F.log_softmax(model(x[i : i + 1]), dim=-1)[0, y[i]]
        grads = torch.autograd.grad(log_likelihood, [p for _, p in named])
        # true_class_prob: each sample's squared gradient weighted by p(y|x), as the DER paper's code computes
        # online EWC's Fisher (Mammoth ewc_on.py, exp_cond_prob); hard samples, with large gradients, count less.
        weight = float(log_likelihood.detach().exp()) if weighting == "true_class_prob" else 1.0
        for (n, _), g in zip(named, grads):
            fisher[n] += weight * g**2
    model.train(was_training)
    return {n: f / len(y) for n, f in fisher.items()}


def ewc_penalty(
    model: torch.nn.Module, fisher_diags: list[dict[str, torch.Tensor]], anchors: list[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """Σ_k ½ Σ_j F_{k,j}(θ_j − θ*_{k,j})², without λ; zero at every anchor with its own Fisher."""
    penalty = torch.zeros((), device=next(model.parameters()).device)
    named = dict(model.named_parameters())
    for fisher, anchor in zip(fisher_diags, anchors):
        for n, f in fisher.items():
            penalty = penalty + 0.5 * (f * (named[n] - anchor[n]) ** 2).sum()
    return penalty


def task_fisher(model: torch.nn.Module, task: TaskData, limit: int | None, generator: torch.Generator | None,
                weighting: str = "none"):
    """Empirical Fisher diagonal on ``task``'s training data, on at most ``limit`` samples drawn with ``generator``."""
    x, y = task.x, task.y
    if limit and limit < len(y):
        pick = torch.randperm(len(y), generator=generator)[:limit].to(y.device)
        x, y = take(x, pick), y[pick]
    return empirical_fisher_diag(model, x, y, weighting)


@register("ewc")
class EWC(Method):
    defaults = {"ewc_lambda": 100.0, "fisher_samples": None, "fisher_weighting": "none"}

    def __init__(self, model, params, n_classes):
        super().__init__(model, params, n_classes)
        self.fisher_diags: list[dict[str, torch.Tensor]] = []
        self.anchors: list[dict[str, torch.Tensor]] = []

    def loss(self, x, y, logits):
        task_loss = F.cross_entropy(logits, y)
        if not self.fisher_diags:
            return task_loss
        return task_loss + self.params["ewc_lambda"] * ewc_penalty(self.model, self.fisher_diags, self.anchors)

    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        self.fisher_diags.append(task_fisher(self.model, task, self.params.get("fisher_samples"), self.generator,
                                             self.params["fisher_weighting"]))
        self.anchors.append(trainable_copy(self.model))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fisher_diags": self.fisher_diags, "anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.fisher_diags = [self.on_device(f) for f in state["fisher_diags"]]
        self.anchors = [self.on_device(a) for a in state["anchors"]]


@register("ewc_online")
class OnlineEWC(Method):
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

    defaults = {"ewc_lambda": 100.0, "gamma": 1.0, "fisher_samples": None, "fisher_weighting": "none"}

    def __init__(self, model, params, n_classes):
        super().__init__(model, params, n_classes)
        self.running_fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self) -> torch.Tensor:
        """½ Σ_j γ F*_j (θ_j − θ*_j)², without λ; zero at the anchor."""
        decayed = {n: self.params["gamma"] * f for n, f in self.running_fisher.items()}
        return ewc_penalty(self.model, [decayed], [self.anchor])

    def loss(self, x, y, logits):
        task_loss = F.cross_entropy(logits, y)
        if not self.running_fisher:
            return task_loss
        return task_loss + self.params["ewc_lambda"] * self.penalty()

    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        fisher = task_fisher(self.model, task, self.params.get("fisher_samples"), self.generator,
                             self.params["fisher_weighting"])
        gamma = self.params["gamma"]
        self.running_fisher = {
            n: (gamma * self.running_fisher[n] + f) if n in self.running_fisher else f for n, f in fisher.items()
        }
        self.anchor = trainable_copy(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "running_fisher": self.running_fisher, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.running_fisher = self.on_device(state["running_fisher"])
        self.anchor = self.on_device(state["anchor"])
