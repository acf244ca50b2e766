"""Backbones and heads: a registry from architecture names to constructors, and the ``Net`` that joins them.

Each family has its module (``mlp``, ``cnn``, ``resnet``, ``vit``, ``flava``, ``clip``, or a lab's own registered
under the ``clgrid.backbones`` entry point), which declares its facts in an ``ARCHS`` literal (read without torch
by ``clgrid.catalog.archs``) and holds the builder returning ``(backbone, feature_dim)``. A backbone
is an ``nn.Sequential`` whose named children are its blocks (``block1``, ``block2``, …; ResNets add ``stem``
and ``pool``): ``freeze: first_k``, the CKA layers and the feature cache rely on those names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from clgrid.catalog import archs as catalog


class Preprocess(nn.Module):
    """Input to float in [0, 1], then per-channel ``(x − mean) / std``; the first step of ``Net``.

    Images travel to the device as uint8 (4× less memory and transfer than float32); ``x.float() / 255``
    happens here, on the device. Float inputs pass through untouched unless ``mean``/``std`` are given.
    The buffers are non-persistent: they follow ``.to(device)`` but stay out of ``state_dict``, so
    checkpoints keep the same keys with or without normalisation.
    """

    def __init__(self, mean: list[float] | None = None, std: list[float] | None = None):
        super().__init__()
        if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
            raise ValueError(f"input_norm needs mean and std of the same length (one per channel), "
                             f"got mean={mean}, std={std}")
        if std is not None and min(std) <= 0:
            raise ValueError(f"input_norm std must be positive, got {std}")
        self.register_buffer("mean", None if mean is None else torch.tensor(mean, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("std", None if std is None else torch.tensor(std, dtype=torch.float32),
                             persistent=False)
        # Where the model lives: inputs kept in host memory (datasets too large for the device) move here.
        self.register_buffer("anchor", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device != self.anchor.device:
            x = x.to(self.anchor.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.float() / 255
        if self.mean is not None:
            shape = (1, -1) + (1,) * (x.dim() - 2)  # channel axis 1 of N×C×H×W (or N×C)
            x = (x - self.mean.view(shape)) / self.std.view(shape)
        return x


class Net(nn.Module):
    """A backbone that maps inputs to features and a head that maps features to logits.

    Methods that distil or classify on features (iCaRL, NCM heads, CKA) use
    ``features``; everything else calls the module itself. Both start with ``preprocess``
    (uint8 → [0, 1], optional per-channel normalisation; see ``Preprocess``).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, n_classes: int, head: str = "linear",
                 head_hidden: list[int] | None = None, input_norm: dict[str, list[float]] | None = None):
        super().__init__()
        norm = input_norm or {}
        self.preprocess = Preprocess(norm.get("mean"), norm.get("std"))
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
        return self.backbone(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.preprocess(x)))


@dataclass(frozen=True)
class Arch:
    """One backbone family in the registry: its declared facts (``clgrid.catalog.archs``) and its code."""

    build: Callable[..., Any]
    """``build(input_shape, **options) -> (backbone, feature_dim)``; for an arch that builds its whole net (CLIP),
    ``build(options, class_names, load_weights, dataset) -> Net``."""
    defaults: dict[str, Any]
    """Every option and its default, as the family module declares them (the schema is filled from the same)."""
    blocks: Callable[..., list[str]]
    """``blocks(**options)``: names of the backbone's children with weights, known without building it."""
    facts: catalog.Arch
    """Everything else the family declares (weights option, costs, ...)."""


def _named_blocks(names: tuple[str, ...], **_) -> list[str]:
    return list(names)


def _code(facts: catalog.Arch) -> Arch:
    """The registry entry of a declared arch: its builder and blocks function taken from its family module."""
    module = importlib.import_module(facts.module)
    if facts.build_net:
        build = getattr(module, facts.build_net)
    else:
        build = partial(getattr(module, facts.build), **facts.build_options)
    if isinstance(facts.blocks, str):
        blocks = getattr(module, facts.blocks)
    else:
        blocks = partial(_named_blocks, facts.blocks)
    return Arch(build, facts.defaults, blocks, facts)


BACKBONES: dict[str, Arch] = {name: _code(facts) for name, facts in catalog.archs().items()}
"""Every arch (clgrid's families and those installed packages register) with its builder."""

HEAD_OPTIONS = catalog.HEAD_OPTIONS


def backbone_options(backbone_cfg: dict[str, Any]) -> dict[str, Any]:
    """The arch's options from a backbone config, defaults filled in; unknown arch or option names fail here."""
    arch = backbone_cfg.get("arch")
    if arch not in BACKBONES:
        raise KeyError(f"unknown backbone arch '{arch}'; valid: {', '.join(sorted(BACKBONES))}")
    defaults = BACKBONES[arch].defaults
    unknown = sorted(set(backbone_cfg) - {"arch", *catalog.COMMON_OPTIONS, *defaults})
    if unknown:
        raise KeyError(f"backbone option(s) {unknown} do not apply to arch '{arch}'; "
                       f"valid: {', '.join(sorted([*defaults, *HEAD_OPTIONS]))}")
    return {name: backbone_cfg.get(name, default) for name, default in defaults.items()}


def declared_blocks(backbone_cfg: dict[str, Any]) -> list[str]:
    """The backbone blocks with weights a config will build, without building it (for config checks)."""
    return BACKBONES[backbone_cfg["arch"]].blocks(**backbone_options(backbone_cfg))


def backbone_blocks(model: Net) -> list[str]:
    """Names of the backbone's children that hold weights, in order: what ``freeze: first_k`` counts."""
    return [name for name, module in model.backbone.named_children() if any(True for _ in module.parameters())]


def build_model(backbone_cfg: dict[str, Any], input_shape: list[int], n_classes: int,
                input_norm: dict[str, list[float]] | None = None, class_names: list[str] | None = None,
                load_weights: bool = True, dataset: str | None = None) -> Net:
    """Build the network a backbone config describes, for a scenario's input shape and classes.

    ``input_norm`` = ``{"mean": [...], "std": [...]}`` per input channel, in [0, 1] pixel units, or None.
    Pretrained backbones (CLIP) read ``class_names`` (zero-shot head) and ``dataset`` (prompt templates), and load
    their weights only with ``load_weights`` (the init job; later jobs load a checkpoint over them).
    """
    options = backbone_options(backbone_cfg)
    arch = BACKBONES[backbone_cfg["arch"]]
    if arch.facts.build_net:
        names = class_names or [str(c) for c in range(n_classes)]
        return arch.build(options, names[:n_classes], load_weights, dataset)
    if input_norm is not None and len(input_norm["mean"]) not in (1, input_shape[0]):
        raise ValueError(f"input_norm has {len(input_norm['mean'])} channel means for input_shape {list(input_shape)}; "
                         f"expected {input_shape[0]} (or 1 for all channels)")
    if arch.facts.weights_option:
        options["load_weights"] = load_weights  # pretrained weights: only the init job reads them
    backbone, feature_dim = arch.build(tuple(input_shape), **options)
    return Net(backbone, feature_dim, n_classes, backbone_cfg.get("head", "linear"), backbone_cfg.get("head_hidden"),
               input_norm=input_norm)
