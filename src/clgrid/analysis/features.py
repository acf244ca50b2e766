"""Layer outputs of a model on a fixed set of inputs, collected with forward hooks."""

from __future__ import annotations

import numpy as np
import torch


def default_layers(model: torch.nn.Module) -> list[str]:
    """Each block of the backbone, then the head: the layers CKA compares unless the config names others.

    Transformers have no ``block<i>`` children: their layers are FLAVA's ``encoder.layer.<i>`` and CLIP's
    ``transformer.resblocks.<i>``.
    """
    backbone = model.backbone
    blocks = [f"backbone.{name}" for name, _ in backbone.named_children() if name.startswith("block")]
    for path in ("encoder.layer", "transformer.resblocks"):
        try:
            layers = backbone.get_submodule(path)
        except AttributeError:
            continue
        blocks += [f"backbone.{path}.{i}" for i in range(len(layers))]
    return blocks + ["head"]


def _first_tensor(out):
    """A module's output tensor (transformer layers return tuples whose first element is the hidden states)."""
    return out[0] if isinstance(out, (tuple, list)) else out


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
            lambda _m, _i, out, name=name: captured[name].append(
                _first_tensor(out).detach().flatten(1).cpu().numpy())
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
