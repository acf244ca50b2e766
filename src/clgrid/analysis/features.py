"""Layer outputs of a model on a fixed set of inputs, collected with forward hooks."""

from __future__ import annotations

import numpy as np
import torch


def default_layers(model: torch.nn.Module) -> list[str]:
    """Each block of the backbone, then the head: the layers CKA compares unless the config names others."""
    blocks = [f"backbone.{name}" for name, _ in model.backbone.named_children() if name.startswith("block")]
    return blocks + ["head"]


@torch.no_grad()
def layer_features(model: torch.nn.Module, x: torch.Tensor, layers: list[str], batch: int = 512) -> dict[str, np.ndarray]:
    """Outputs (flattened per sample) of the named submodules on ``x``, in evaluation mode."""
    for name in layers:
        try:
            model.get_submodule(name)
        except AttributeError:
            valid = [n for n, _ in model.named_modules() if n]
            raise KeyError(f"unknown layer '{name}'; valid: {', '.join(valid)}") from None
    captured: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(out.detach().flatten(1).cpu().numpy())
        )
        for name in layers
    ]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch):
            model(x[start : start + batch])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: np.concatenate(parts) for name, parts in captured.items()}
