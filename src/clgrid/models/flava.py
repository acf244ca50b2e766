"""FLAVA's image encoder (Singh et al. 2022, CVPR) through ``transformers``, as a clgrid backbone.

The backbone's children are FLAVA's own (``embeddings``, ``encoder``, ``layernorm``, ``pooler``), so
``freeze: first_k`` freezes them in that order (``freeze_k: 3`` leaves only the pooler trainable: "last child
trainable"), and their state-dict keys are those of ``FlavaImageModel``. ``frozen_layers: k`` also freezes the
first k transformer layers of the encoder. Features: the pooled CLS embedding (``output: pooled``; FLAVA's pooler,
dense + tanh on the CLS token) or every token embedding after the final layer norm, flattened (``output: tokens``).

Inputs in [0, 1] (``Net.preprocess``) of any size and channel count are resized to the model's ``image_size`` and
normalised with FLAVA's image statistics (those of CLIP) inside the backbone.

Weights: ``pretrained`` is a Hugging Face name (``facebook/flava-full``: the image model of the full FLAVA) or a
folder written by ``save_pretrained``; ``null`` builds a random model from ``flava_config`` (tests use a tiny one).
Offline, a name that is not in the cache fails at once with what to run on a machine with network.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from clgrid.models.clip import OPENAI_MEAN, OPENAI_STD, weights_missing

# This family's facts, read without importing this module (clgrid.catalog.archs): see that module for each key.
# CPU seconds: at its own 224 px whatever the data's size.
ARCHS = {
    "flava": {
        "build": "flava_backbone",
        "blocks": ["embeddings", "encoder", "layernorm", "pooler"],
        "defaults": {"pretrained": "facebook/flava-full", "flava_config": None, "output": "pooled", "frozen_layers": 0,
                     "cache_dir": None},
        "weights_option": "pretrained",
        "cpu_seconds_per_sample": 0.4,
        "cost_scales_with_pixels": False,
        "parameters": 86e6,
        "lora_default_targets": True,
    },
}


def load_flava_image_model(pretrained: str | None, flava_config: dict[str, Any] | None,
                           cache_dir: str | None = None) -> nn.Module:
    from transformers import FlavaImageConfig, FlavaImageModel, FlavaModel

    if not pretrained:
        return FlavaImageModel(FlavaImageConfig(**(flava_config or {})))
    try:
        if os.path.isdir(pretrained) and os.path.isfile(os.path.join(pretrained, "config.json")):
            import json

            with open(os.path.join(pretrained, "config.json")) as f:
                kind = json.load(f).get("model_type")
            if kind == "flava_image_model":
                return FlavaImageModel.from_pretrained(pretrained)
        return FlavaModel.from_pretrained(pretrained, cache_dir=cache_dir).image_model
    except OSError as err:
        fetch = (f"python -c \"from transformers import FlavaModel; FlavaModel.from_pretrained('{pretrained}')"
                 f".image_model.save_pretrained('flava_image')\"")
        raise weights_missing(f"FLAVA weights {pretrained!r}", cache_dir, fetch, "give the folder as pretrained",
                              err) from err


class FlavaBackbone(nn.Module):
    """FLAVA's image encoder with its own children; ``forward`` maps [0, 1] images to features."""

    def __init__(self, image_model: nn.Module, output: str = "pooled", frozen_layers: int = 0):
        super().__init__()
        if output not in ("pooled", "tokens"):
            raise KeyError(f"unknown FLAVA output {output!r}; valid: pooled, tokens")
        config = image_model.config
        n_layers = len(image_model.encoder.layer)
        if not 0 <= frozen_layers <= n_layers:
            raise ValueError(f"frozen_layers = {frozen_layers}, but the encoder has {n_layers} layers")
        self.image_size, self.output = int(config.image_size), output
        self.embeddings, self.encoder = image_model.embeddings, image_model.encoder
        self.layernorm, self.pooler = image_model.layernorm, image_model.pooler
        self.register_buffer("mean", torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_STD).view(1, 3, 1, 1), persistent=False)
        for layer in self.encoder.layer[:frozen_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)
        n_tokens = (self.image_size // config.patch_size) ** 2 + 1
        self.feature_dim = config.hidden_size * (n_tokens if output == "tokens" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        tokens = self.layernorm(self.encoder(self.embeddings((x - self.mean) / self.std))[0])
        return self.pooler(tokens) if self.output == "pooled" else tokens.flatten(1)


def flava_backbone(input_shape: tuple[int, ...], pretrained: str | None = "facebook/flava-full",
                   flava_config: dict[str, Any] | None = None, output: str = "pooled", frozen_layers: int = 0,
                   cache_dir: str | None = None, load_weights: bool = True) -> tuple[nn.Module, int]:
    """(backbone, feature_dim) for ``Net``; ``load_weights=False`` builds the architecture only (a checkpoint follows)."""
    if not load_weights and pretrained:
        from transformers import FlavaImageConfig, FlavaImageModel

        # The architecture only: a saved folder's config, else FLAVA-full's image config (transformers' defaults).
        config = (FlavaImageConfig.from_pretrained(pretrained) if os.path.isdir(pretrained)
                  else FlavaImageConfig(**(flava_config or {})))
        image_model = FlavaImageModel(config)
    else:
        image_model = load_flava_image_model(pretrained, flava_config, cache_dir)
    backbone = FlavaBackbone(image_model, output, frozen_layers)
    return backbone, backbone.feature_dim
