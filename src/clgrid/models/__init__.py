"""Backbones and heads: a registry from names to constructors, and the ``Net`` that joins them."""

from __future__ import annotations

from collections import OrderedDict
from math import prod
from typing import Any, Callable

import torch
from torch import nn


class Net(nn.Module):
    """A backbone that maps inputs to features and a head that maps features to logits.

    Methods that distil or classify on features (iCaRL, NCM heads, CKA) use
    ``features``; everything else calls the module itself.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, n_classes: int, head: str = "linear",
                 head_hidden: list[int] | None = None):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head_kind = head
        if head == "mlp":
            layers, width = [], feature_dim
            for size in head_hidden or [256]:
                layers += [nn.Linear(width, size), nn.ReLU()]
                width = size
            self.head = nn.Sequential(*layers, nn.Linear(width, n_classes))
        elif head in ("linear", "ncm"):
            self.head = nn.Linear(feature_dim, n_classes)
        else:
            raise KeyError(f"unknown head '{head}'; valid: linear, mlp, ncm")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


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


BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {
    "mlp": lambda input_shape, cfg: mlp_backbone(input_shape, list(cfg.get("hidden", [256, 256]))),
}


def build_model(backbone_cfg: dict[str, Any], input_shape: list[int], n_classes: int) -> Net:
    """Build the network a backbone config describes, for a scenario's input shape and classes."""
    arch = backbone_cfg["arch"]
    if arch not in BACKBONES:
        raise KeyError(f"unknown backbone arch '{arch}'; valid: {', '.join(sorted(BACKBONES))}")
    backbone, feature_dim = BACKBONES[arch](tuple(input_shape), backbone_cfg)
    return Net(backbone, feature_dim, n_classes, backbone_cfg.get("head", "linear"), backbone_cfg.get("head_hidden"))
