"""A small convolutional backbone for images too large for an MLP and too small to need a ResNet.

Each block is Conv3×3 (padding 1) → BatchNorm → ReLU → MaxPool 2×2, the VGG-style unit of the small CNNs
used in continual-learning papers (e.g. Zenke et al. 2017's CIFAR network, Avalanche's SimpleCNN). Choices:

- BatchNorm is on by default (it makes SGD at the benchmarks' learning rates stable) but ``batch_norm: false``
  is offered because running statistics drift across tasks (Pham et al. 2022, "Continual Normalization");
  with BatchNorm the conv has no bias (BatchNorm's shift makes it redundant).
- A block pools only while the feature map is at least 2×2, so deep stacks on 8×8 digits still build.
- ``pool`` flattens by default (the head sees spatial layout, feature_dim = C·H'·W'); ``global_pool: true``
  averages over space instead (feature_dim = the last block's channels).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

# This family's facts, read without importing this module (clgrid.catalog.archs): see that module for each key.
ARCHS = {
    "cnn": {
        "build": "cnn_backbone",
        "blocks": "cnn_blocks",
        "defaults": {"channels": [32, 64], "batch_norm": True, "global_pool": False},
        "children_without_weights": ["pool"],
        "cpu_seconds_per_sample": 1e-3,
        "cost_scales_with_pixels": True,
        "parameters": 1e6,
        "lora_default_targets": False,
    },
}


def cnn_backbone(input_shape: tuple[int, ...], channels: list[int], batch_norm: bool = True,
                 global_pool: bool = False) -> tuple[nn.Module, int]:
    """Conv blocks ``block1``..``blockK`` (``channels[k-1]`` filters each), then ``pool``; with feature_dim."""
    if len(input_shape) != 3:
        raise ValueError(f"the cnn backbone needs image inputs (channels, height, width), got input_shape "
                         f"{list(input_shape)}; use arch: mlp for flat inputs")
    in_channels, height, width = input_shape
    layers: dict[str, nn.Module] = {}
    for i, out_channels in enumerate(channels, start=1):
        block: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            block.append(nn.BatchNorm2d(out_channels))
        block.append(nn.ReLU())
        if min(height, width) >= 2:
            block.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        layers[f"block{i}"] = nn.Sequential(*block)
        in_channels = out_channels
    if global_pool:
        layers["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        feature_dim = in_channels
    else:
        layers["pool"] = nn.Flatten()
        feature_dim = in_channels * height * width
    return nn.Sequential(OrderedDict(layers)), feature_dim


def cnn_blocks(channels: list[int], **_) -> list[str]:
    """The blocks with weights a CNN of these widths has (``pool`` has none)."""
    return [f"block{i}" for i in range(1, len(channels) + 1)]
