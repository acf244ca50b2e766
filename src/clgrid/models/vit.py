"""ViT-B/16 (Dosovitskiy et al. 2021) from torchvision, with its ImageNet weights, as a clgrid backbone.

torchvision's ``VisionTransformer`` cut into named blocks, so ``freeze: first_k``, the CKA layers and the feature
cache see its structure: ``patch_embed`` (the 16×16 patch projection, the class token and the position embeddings),
``layer0`` … ``layer11`` (the encoder blocks) and ``norm`` (the final LayerNorm); the feature is the class token
after ``norm`` (768-d), torchvision's ``heads`` is dropped for ``Net``'s head. Inputs of any size and channel count
are resized (bilinear) to the model's ``image_size`` (224) and grey ones repeated to RGB inside the backbone.

``weights``: ``imagenet`` (``ViT_B_16_Weights.DEFAULT``) or a torchvision state-dict file, see
``clgrid.models.torchvision_weights``; ``null`` initialises it as torchvision does. ``vit_config`` overrides the
architecture (tests use a tiny one: ``{image_size: 32, patch_size: 8, num_layers: 2, num_heads: 2, hidden_dim: 32,
mlp_dim: 64}``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# This family's facts, read without importing this module (clgrid.catalog.archs): see that module for each key.
# CPU seconds: at 224 px whatever the data's size, about 3x CLIP ViT-B/32's image tower.
ARCHS = {
    "vit_b_16": {
        "build": "vit_backbone",
        "blocks": "vit_blocks",
        "defaults": {"weights": None, "vit_config": None},
        "weights_option": "weights",
        "torchvision_weights": "ViT_B_16_Weights",
        "children_without_weights": ["cls"],
        "cpu_seconds_per_sample": 0.5,
        "cost_scales_with_pixels": False,
        "parameters": 86e6,
        "lora_default_targets": True,
    },
}
VIT_B_16 = {"image_size": 224, "patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072}


class PatchEmbed(nn.Module):
    """Images → tokens: patch projection, class token prepended, position embeddings added."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.image_size, self.patch_size = vit.image_size, vit.patch_size
        self.conv_proj, self.class_token = vit.conv_proj, vit.class_token
        self.pos_embedding, self.dropout = vit.encoder.pos_embedding, vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), tokens], dim=1)
        return self.dropout(tokens + self.pos_embedding)


class ClassToken(nn.Module):
    """The class token of the final tokens: the feature ViT classifies from."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0]


def vit_blocks(vit_config: dict[str, Any] | None = None, **_) -> list[str]:
    layers = {**VIT_B_16, **(vit_config or {})}["num_layers"]
    return ["patch_embed", *(f"layer{i}" for i in range(layers)), "norm"]


def vit_backbone(input_shape: tuple[int, ...], weights: str | None = None, vit_config: dict[str, Any] | None = None,
                 load_weights: bool = True) -> tuple[nn.Module, int]:
    """ViT-B/16 (or ``vit_config``'s variant) as named blocks; returns it and its feature dim."""
    from collections import OrderedDict

    from torchvision.models.vision_transformer import VisionTransformer

    if len(input_shape) != 3:
        raise ValueError(f"vit_b_16 needs image inputs (channels, height, width), got {list(input_shape)}")
    config = {**VIT_B_16, **(vit_config or {})}
    if weights and config != VIT_B_16:
        raise ValueError("vit_b_16 weights are for ViT-B/16 itself: leave vit_config out to load them")
    vit = VisionTransformer(**config)
    if weights and load_weights:
        from clgrid.models.torchvision_weights import load_state_dict

        vit.load_state_dict(load_state_dict("vit_b_16", weights))
    blocks: OrderedDict[str, nn.Module] = OrderedDict(patch_embed=PatchEmbed(vit))
    for i, layer in enumerate(vit.encoder.layers):
        blocks[f"layer{i}"] = layer
    blocks["norm"] = vit.encoder.ln
    blocks["cls"] = ClassToken()
    return nn.Sequential(blocks), config["hidden_dim"]
