"""Orthogonal Gradient Descent (Farajtabar et al. 2020, AISTATS, Alg. 1), variant OGD-GTL.

After task k, for a sample of the task's training points x, store the gradients
∇_θ f_y(x; θ*_k) of the ground-truth logit (GTL: the logit of x's own label; one
gradient per sample, where the paper's OGD-ALL stores one per class per sample),
flattened over all trainable parameters and orthonormalised by Gram–Schmidt into a basis
S of all earlier tasks' directions. While training later tasks, every gradient is
projected onto the orthogonal complement of S before the optimizer step:

    g̃ = g − Σ_{v∈S} (gᵀv) v

so, to first order, a step leaves the true-class logits of the sampled points of every
earlier task unchanged. Only the true
class's logit is held: in a single-head class-incremental stream the new classes' logits
on old inputs are free to grow, so old tasks are still overwritten there.

Defaults: ``ogd_samples`` = 200 stored gradients per task, the storage the paper's
experiments use; each sample adds at most one direction, so it is also the cap on
new directions per task. A Gram–Schmidt residual below ``RESIDUAL_TOLERANCE`` of its
vector's norm is already in the span and is dropped (see ``extend_orthonormal_basis``).

Memory: the basis is dense float32, 4 · P bytes per direction (P = trainable parameters),
kept in the checkpoint. For the 64→256→256→10 digits MLP (P ≈ 85k) that is 68 MB per task
at 200 directions, 340 MB after five tasks; each projection reads the whole basis twice.

The paper's OGD is plain SGD. With momentum the velocity is a sum of projected gradients,
so it stays in the complement too; L2 weight decay (added by the optimizer after this
hook) and Adam's per-coordinate scaling leave it, so the guarantee holds only without them.
"""

from __future__ import annotations

from typing import Any

import torch

from clgrid.methods.base import Method, TaskData, register, take
from clgrid.methods.parts.flat import FlatLayout

RESIDUAL_TOLERANCE = 1e-4
"""A Gram–Schmidt residual shorter than this fraction of its vector is rounding noise, not a new direction."""


def project_out(gradient: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """g − Vᵀ(V g) for a basis V with orthonormal rows: g's component orthogonal to span(V)."""
    if len(basis) == 0:
        return gradient
    return gradient - basis.T @ (basis @ gradient)


def extend_orthonormal_basis(basis: torch.Tensor, vectors: torch.Tensor, max_new: int | None = None,
                             tolerance: float = RESIDUAL_TOLERANCE) -> torch.Tensor:
    """Gram–Schmidt ``vectors`` (rows, in order) against ``basis`` (orthonormal rows) and each other.

    Returns the extended basis. Vector i adds the direction of its residual against the
    basis and the directions accepted before it, unless that residual is shorter than
    ``tolerance`` · ‖vector i‖ (already in the span); at most ``max_new`` rows are added.

    Done with matrix–matrix products, since the basis can hold hundreds of rows of
    100k entries: one block projection onto the old basis; the sequential Gram–Schmidt
    within the block as an incremental Cholesky factorisation of the residuals' Gram matrix
    in float64 (it gives each residual's length against the earlier kept ones exactly as
    Gram–Schmidt does, resolving lengths far below ``tolerance``); then a second projection
    onto the old basis and a QR of the new rows, the "twice is enough" re-orthogonalisation
    (Giraud et al. 2005, Numer. Math.) that makes the rows orthonormal to float precision.
    """
    norms = torch.linalg.vector_norm(vectors, dim=1).double()
    residuals = (vectors - (vectors @ basis.T) @ basis).double()
    gram = residuals @ residuals.T
    cap = len(vectors) if max_new is None else min(max_new, len(vectors))
    kept: list[int] = []
    # Lower-triangular L with gram[kept][:, kept] = L Lᵀ.
    factor = torch.zeros(cap, cap, dtype=torch.float64, device=vectors.device)
    for i in range(len(vectors)):
        if len(kept) == cap:
            break
        k = len(kept)
        # Coefficients of residual i on the k kept directions, and the squared length of what is left.
        coefficients = torch.linalg.solve_triangular(factor[:k, :k], gram[kept, i : i + 1], upper=False).flatten()
        left = gram[i, i] - coefficients @ coefficients
        if left > (tolerance * norms[i]) ** 2:
            factor[k, :k] = coefficients
            factor[k, k] = left.sqrt()
            kept.append(i)
    if not kept:
        return basis
    k = len(kept)
    new_rows = torch.linalg.solve_triangular(factor[:k, :k], residuals[kept], upper=False).to(vectors.dtype)
    new_rows = new_rows - (new_rows @ basis.T) @ basis
    new_rows = torch.linalg.qr(new_rows.T).Q.T
    return torch.cat([basis, new_rows])


def ground_truth_logit_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                                 params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Rows ∇_θ f_{y_i}(x_i) flattened over ``params``, one per sample, each written straight into its row.

    A per-sample loop, as EWC's Fisher: ``torch.func.vmap`` imports ``torch._dynamo`` (about 1.3 s per job), more
    than this loop takes for 200 samples on the digits MLP or CNN (0.1 to 0.3 s on one thread); a batched
    Jacobian (``is_grads_batched``) does work that grows with the batch squared and was no faster on the CNN.
    """
    layout = FlatLayout([(str(i), p) for i, p in enumerate(params)])
    rows = torch.empty(len(y), layout.numel, device=params[0].device, dtype=params[0].dtype)
    was_training = model.training
    model.eval()
    for i in range(len(y)):
        logit = model(x[i : i + 1].to(params[0].device))[0, y[i]]  # x may be host-resident (placement host)
        grads = torch.autograd.grad(logit, params, allow_unused=True)
        pieces = layout.views(rows[i])
        if any(g is None for g in grads):  # a parameter the logit does not reach: a zero gradient
            for piece in [piece for piece, g in zip(pieces, grads) if g is None]:
                piece.zero_()
            pieces, grads = [pc for pc, g in zip(pieces, grads) if g is not None], [g for g in grads if g is not None]
        if grads:
            torch._foreach_copy_(pieces, list(grads))
    model.train(was_training)
    return rows


@register("ogd")
class OGD(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "ogd_samples": {
            "description": ("training points per task whose ground-truth-logit gradients join the basis (Farajtabar et "
                            "al. 2020 store 200 per task); also the cap on new directions per task; null = every "
                            "training point. Memory 4 bytes x trainable parameters per direction, kept in every "
                            "checkpoint"),
            "type": ["integer", "null"], "minimum": 1, "default": 200,
        },
    }
    FACTS: dict[str, Any] = {"paper": "Farajtabar et al. 2020, AISTATS",
                             "state_weights": {"per_task": "ogd_samples"}}  # a gradient direction per sample

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        named = self._trainable()
        self.param_names = [n for n, _ in named]
        self.layout = FlatLayout(named)
        # Orthonormal rows spanning the stored gradients of all earlier tasks.
        self.ogd_basis = torch.zeros(0, self.layout.numel, device=next(model.parameters()).device)
        self.directions_per_task: list[int] = []

    def _trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def after_backward(self) -> None:
        """Replace the gradient by its projection: one concatenation, two matrix-vector products, one copy back."""
        if len(self.ogd_basis) == 0:
            return
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = [p.grad for p in params]
        if any(g is None for g in grads):  # a parameter this loss did not reach: its gradient is 0 before projection
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            grads = [p.grad for p in params]
        projected = project_out(self.layout.flatten(grads), self.ogd_basis)
        torch._foreach_copy_(grads, self.layout.views(projected))

    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        x, y = task.x, task.y
        limit = self.params["ogd_samples"]
        if limit is not None and limit < len(y):
            pick = torch.randperm(len(y), generator=self.generator)[:limit].to(y.device)
            x, y = take(x, pick), y[pick]
        gradients = ground_truth_logit_gradients(self.model, x, y, [p for _, p in self._trainable()])
        before = len(self.ogd_basis)
        self.ogd_basis = extend_orthonormal_basis(self.ogd_basis, gradients, max_new=limit)
        self.directions_per_task.append(len(self.ogd_basis) - before)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "ogd_basis": self.ogd_basis,
            "ogd_param_names": list(self.param_names),
            "directions_per_task": list(self.directions_per_task),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if list(state["ogd_param_names"]) != self.param_names:
            raise ValueError(
                "OGD's stored basis was built over other trainable parameters than this model has "
                f"({len(state['ogd_param_names'])} stored vs {len(self.param_names)} now); keep the same backbone "
                "and freeze settings across the tasks of a run"
            )
        self.ogd_basis = state["ogd_basis"].to(self.device)
        self.directions_per_task = list(state["directions_per_task"])
