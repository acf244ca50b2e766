"""Multi-layer perceptron backbone: the small network of the embedded digits grid."""

from __future__ import annotations

from collections import OrderedDict
from math import prod

from torch import nn

# This family's facts, read without importing this module (clgrid.catalog.archs): see that module for each key.
ARCHS = {
    "mlp": {
        "build": "mlp_backbone",
        "blocks": "mlp_blocks",
        "defaults": {"hidden": [256, 256]},
        "children_without_weights": ["flatten"],
        "cpu_seconds_per_sample": 5e-5,
        "cost_scales_with_pixels": False,
        "parameters": 1e6,
        "lora_default_targets": True,
    },
}


def mlp_backbone(input_shape: tuple[int, ...], hidden: list[int]) -> tuple[nn.Module, int]:
    """Flatten, then Linear+ReLU blocks named ``block1``, ``block2``, …: 64→256→256 for digits by default.

    Named blocks give analyses (CKA per layer) and freezing stable layer names.
    """
    layers: dict[str, nn.Module] = {"flatten": nn.Flatten()}
    width = prod(input_shape)
    for i, size in enumerate(hidden, start=1):
        layers[f"block{i}"] = nn.Sequential(nn.Linear(width, size), nn.ReLU())
        width = size
    return nn.Sequential(OrderedDict(layers)), width


def mlp_blocks(hidden: list[int], **_) -> list[str]:
    """The blocks with weights an MLP of these widths has (``flatten`` has none)."""
    return [f"block{i}" for i in range(1, len(hidden) + 1)]
