"""Elastic Weight Consolidation (Kirkpatrick et al. 2017, PNAS, eq. 3).

    L(θ) = L_t(θ) + Σ_{k<t} (λ/2) Σ_j F_{k,j} (θ_j − θ*_{k,j})²

θ*_k are the weights after task k and F_k the diagonal of the *empirical* Fisher
at θ*_k: the mean over task-k training samples of the squared gradient of
log p(y | x; θ) at the true label. One penalty per past task (not the online
variant of Schwarz et al. 2018).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register


def empirical_fisher_diag(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
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
        for (n, _), g in zip(named, grads):
            fisher[n] += g**2
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


@register("ewc")
class EWC(Method):
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
        x, y = task.x, task.y
        limit = self.params.get("fisher_samples")
        if limit and limit < len(y):
            pick = torch.randperm(len(y), generator=self.generator)[:limit].to(y.device)
            x, y = x[pick], y[pick]
        self.fisher_diags.append(empirical_fisher_diag(self.model, x, y))
        self.anchors.append({n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fisher_diags": self.fisher_diags, "anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = next(self.model.parameters()).device
        self.fisher_diags = [{n: t.to(device) for n, t in f.items()} for f in state["fisher_diags"]]
        self.anchors = [{n: t.to(device) for n, t in a.items()} for a in state["anchors"]]
