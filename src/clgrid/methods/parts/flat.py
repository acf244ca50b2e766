"""Trainable weights as one flat vector, and the quadratic penalty ``Σ_k Σ_j w_kj (θ_j − a_kj)²`` on it.

EWC, online EWC, SI and L2-init penalise distances to anchors; A-GEM and OGD project flat gradients. Laid end to end,
each costs a few whole-vector ops per step instead of a Python loop of small ops per parameter tensor.
"""

from __future__ import annotations

import torch


class FlatLayout:
    """Named tensors of fixed shapes laid end to end in one flat vector.

    Penalties, path integrals and gradient projections then cost a few whole-vector ops per step instead of a
    Python loop of small ops per parameter. ``named_views`` gives back the per-name tensors that states (and the
    checkpoint format) hold, sharing the flat vector's memory.
    """

    def __init__(self, named: list[tuple[str, torch.Tensor]]):
        self.names = [n for n, _ in named]
        self.shapes = [t.shape for _, t in named]
        self.sizes = [t.numel() for _, t in named]
        self.numel = sum(self.sizes)

    @staticmethod
    def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
        """One new vector holding ``tensors`` end to end (a detached copy under ``torch.no_grad``)."""
        return torch.cat([t.reshape(-1) for t in tensors])

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """The per-tensor pieces of ``flat`` (of shape ``(numel,)``), in their shapes, sharing its memory."""
        return [piece.view(shape) for piece, shape in zip(flat.split(self.sizes), self.shapes)]

    def named_views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.views(flat)))

    def flatten_named(self, named: dict[str, torch.Tensor], what: str = "state") -> torch.Tensor:
        """``named`` (one tensor per name, e.g. a loaded state's dict) as one flat vector in this layout's order."""
        if set(named) != set(self.names):
            missing, extra = sorted(set(self.names) - set(named)), sorted(set(named) - set(self.names))
            raise ValueError(f"the {what} holds other parameters than this model trains (missing {missing}, "
                             f"unexpected {extra}); keep the same backbone and freeze settings across a run's tasks")
        return self.flatten([named[n] for n in self.names])


class _SquaredDistance(torch.autograd.Function):
    """``scale · Σ_k Σ_j w_kj (θ_j − a_kj)²`` over flat weights, with the gradient written out.

    The backward repeats autograd's arithmetic for the per-parameter formula ``Σ_k (w_k * (p - a_k) ** 2).sum()``:
    each term's gradient is ``(g·w_k) · (2(θ − a_k))``, summed from the last term to the first, the order in which
    autograd's engine accumulates them when the penalty is built after the model's forward (as every ``loss``
    hook does), so the gradients are the same bit for bit.
    """

    @staticmethod
    def forward(ctx, layout, scale, weights, anchors, *params):
        theta = FlatLayout.flatten(params)
        diffs = [theta - a for a in anchors]
        value = theta.new_zeros(())
        for w, d in zip(weights, diffs):
            value = value + torch.dot(d if w is None else w * d, d)
        ctx.layout, ctx.scale, ctx.weights, ctx.diffs = layout, scale, weights, diffs
        return value * scale

    @staticmethod
    def backward(ctx, grad_value):
        g = grad_value * ctx.scale
        slope = None
        for w, d in reversed(list(zip(ctx.weights, ctx.diffs))):
            part = (g if w is None else g * w) * (2 * d)
            slope = part if slope is None else slope + part
        return (None, None, None, None, *ctx.layout.views(slope))


def squared_distance(layout: FlatLayout, params: list[torch.Tensor], anchors: list[torch.Tensor],
                     weights: list[torch.Tensor | None] | None = None, scale: float = 1.0) -> torch.Tensor:
    """``scale · Σ_k Σ_j w_kj (θ_j − a_kj)²``: θ the flat ``params``, a_k and w_k flat (``None``: unit weights).

    The quadratic penalty of EWC, SI and L2: one concatenation, a few vector ops and a dot product per anchor
    (and one multiply-add per anchor backward), whatever the number of parameter tensors.
    """
    weights = [None] * len(anchors) if weights is None else list(weights)
    return _SquaredDistance.apply(layout, scale, weights, list(anchors), *params)
