"""CLIP through open_clip: loading with a clear offline error, the zero-shot head, and the train modes.

Zero-shot head (Radford et al. 2021, CLIP, Sec. 3.1.4 and its prompt-ensembling notebook): for each class,
embed every prompt template filled with the class name, L2-normalise each embedding, average them, and
L2-normalise the mean. Logits are ``logit_scale · normalise(f(x)) · Wᵀ`` with W the stacked class embeddings.

Train modes (which parts learn; the names CLIP continual-learning code uses):

============== ============== ============== =====================================================
mode           image encoder  text encoder   head
============== ============== ============== =====================================================
whole          trained        trained        the text encoder's class embeddings, recomputed
image          trained        frozen         fixed class embeddings (buffer)
text           frozen         trained        the text encoder's class embeddings, recomputed
image_fc       trained        frozen         linear layer initialised from the class embeddings
image_fc_fixed trained        frozen         linear layer initialised from them, not trained
fc             frozen         frozen         linear layer initialised from the class embeddings
============== ============== ============== =====================================================
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

# This family's facts, read without importing this module (clgrid.catalog.archs): see that module for each key.
# CLIP builds its own Net (ClipNet: image encoder + zero-shot head); its blocks are those of open_clip's
# VisionTransformer that hold weights (for freeze first_k). CPU seconds: ViT-B/32 at its own 224 px whatever the
# data's size, both towers forward + backward: 2.4 s per batch of 8 on 2 cores (../shared/notes/foundation-stack.md).
ARCHS = {
    "clip": {
        "build_net": "build_clip_net",
        "blocks": ["conv1", "ln_pre", "transformer", "ln_post"],
        "defaults": {"model": "ViT-B-16", "pretrained": "openai", "train_mode": "whole", "templates": "auto",
                     "model_config": None, "cache_dir": None},
        "weights_option": "pretrained",
        "frozen_when": {"train_mode": ["fc", "text"]},
        "cpu_seconds_per_sample": 0.3,
        "cost_scales_with_pixels": False,
        "parameters": 150e6,
        "lora_default_targets": True,
    },
}
TRAIN_MODES = ("whole", "image", "text", "image_fc", "image_fc_fixed", "fc")
DEFAULT_TEMPLATES = ("a photo of a {}.",)


class WeightsMissingError(FileNotFoundError):
    """Pretrained weights are neither at the given path nor in the cache, and there is no network."""


def weights_missing(what: str, cache_dir: str | None, fetch: str, alternative: str, err: Exception) -> WeightsMissingError:
    """The one error for pretrained weights that cannot be had: what, where it looked, and how to fetch them."""
    where = cache_dir or os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    return WeightsMissingError(
        f"{what} are not available: not local, not in the cache ({where}), and no network "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). On a machine with network run `{fetch}` and "
        f"{alternative}, or copy {where} here. ({type(err).__name__}: {str(err).splitlines()[0]})")


def load_open_clip(model_name: str, pretrained: str | None, cache_dir: str | None = None) -> tuple[nn.Module, Any]:
    """(model, tokenizer) of an open_clip model: ``pretrained`` is a tag (``openai``), a weights file, or None (random).

    Offline (``HF_HUB_OFFLINE=1``, as clgrid's jobs set) a tag that is not in the cache fails in milliseconds;
    the error says which model, where it looked and how to fetch the weights on a machine with network.
    """
    import open_clip

    if model_name not in open_clip.list_models() and not model_name.startswith(("hf-hub:", "local-dir:")):
        raise KeyError(f"unknown open_clip model {model_name!r}; open_clip.list_models() has e.g. ViT-B-16, ViT-B-32, RN50")
    if pretrained and not os.path.isfile(pretrained) and pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise KeyError(f"pretrained {pretrained!r} is neither a file nor a tag of {model_name}; tags: {tags}")
    try:
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained or None,
                                                            cache_dir=cache_dir)
    except (RuntimeError, OSError) as err:
        fetch = (f"python -c \"import open_clip; open_clip.create_model_and_transforms('{model_name}', "
                 f"pretrained='{pretrained}')\"")
        raise weights_missing(f"open_clip weights {model_name}/{pretrained}", cache_dir, fetch,
                              "save the state_dict to a file to give as pretrained", err) from err
    return model, open_clip.get_tokenizer(model_name)


@torch.no_grad()
def zero_shot_weights(encode_text: Callable[[torch.Tensor], torch.Tensor], tokenizer,
                      class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
    """(classes × dim): per class, the L2-normalised mean of the L2-normalised embeddings of its prompts."""
    rows = []
    for name in class_names:
        embeddings = F.normalize(encode_text(tokenizer([t.format(name) for t in templates])).float(), dim=-1)
        rows.append(F.normalize(embeddings.mean(dim=0), dim=-1))
    return torch.stack(rows)


OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's image normalisation (open_clip.constants)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TEMPLATES = {
    # Per-dataset prompt templates in the style of CLIP's evaluation (Radford et al. 2021, Appendix A/notebook).
    "default": ["a photo of a {}."],
    "digits": ['a photo of the number: "{}".'],
    "mnist": ['a photo of the number: "{}".'],
    "cifar10": ["a photo of a {}.", "a blurry photo of a {}.", "a low resolution photo of a {}.",
                "a photo of the small {}.", "a photo of the big {}."],
    "cifar100": ["a photo of a {}.", "a blurry photo of a {}.", "a low resolution photo of a {}.",
                 "a photo of the small {}.", "a photo of the big {}."],
    "flowers102": ["a photo of a {}, a type of flower."],
    "flowers17": ["a photo of a {}, a type of flower."],
    "oxford_pets": ["a photo of a {}, a type of pet."],
    "fgvc_aircraft": ["a photo of a {}, a type of aircraft."],
    "food101": ["a photo of {}, a type of food."],
    "eurosat": ["a centered satellite photo of {}."],
    "dtd": ["a photo of a {} texture.", "a photo of a {} pattern."],
}


class ClipPreprocess(nn.Module):
    """uint8 images (any size, 1 or 3 channels) → CLIP's input: [0, 1], RGB, resized to the model's size, normalised."""

    def __init__(self, image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD):
        super().__init__()
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.mean.device, non_blocking=True)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        return (x - self.mean) / self.std


class ClipHead(nn.Module):
    """Image embedding → ``logit_scale ·`` cosine logits against one embedding per class (see the module table)."""

    def __init__(self, text: nn.Module | None, prompts: torch.Tensor | None, n_templates: int,
                 class_weights: torch.Tensor, logit_scale: float, mode: str):
        super().__init__()
        self.mode, self.n_templates = mode, n_templates
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        if mode in ("whole", "text"):
            self.text = text  # CLIP without its image tower: encode_text
            self.register_buffer("prompts", prompts)
        elif mode == "image":
            self.register_buffer("class_weights", class_weights.clone())
        else:
            self.linear = nn.Linear(class_weights.shape[1], class_weights.shape[0], bias=False)
            self.linear.weight.data.copy_(class_weights)
            self.linear.weight.requires_grad_(mode in ("image_fc", "fc"))

    def class_embeddings(self) -> torch.Tensor:
        if self.mode in ("whole", "text"):
            n_classes = len(self.prompts) // self.n_templates
            emb = F.normalize(self.text.encode_text(self.prompts), dim=-1)
            return F.normalize(emb.view(n_classes, self.n_templates, -1).mean(dim=1), dim=-1)
        return self.class_weights if self.mode == "image" else self.linear.weight

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale.exp() * F.normalize(features, dim=-1) @ self.class_embeddings().t()


class ClipNet(nn.Module):
    """CLIP as a clgrid ``Net``: ``preprocess``, ``backbone`` (the image encoder), ``head`` (zero-shot classifier).

    ``features`` are the image embeddings (CKA, RankMe, iCaRL's class means read them), ``forward`` the cosine
    logits, so every method, the loop and the evaluation treat it like any other backbone. The text encoder is kept
    only in the modes that train it; elsewhere the class embeddings computed at build time are all the head needs.
    """

    def __init__(self, clip: nn.Module, tokenizer, class_names: Sequence[str], train_mode: str = "whole",
                 templates: Sequence[str] = DEFAULT_TEMPLATES):
        super().__init__()
        if train_mode not in TRAIN_MODES:
            raise KeyError(f"unknown CLIP train_mode {train_mode!r}; valid: {', '.join(TRAIN_MODES)}")
        templates = list(templates)
        weights = zero_shot_weights(clip.encode_text, tokenizer, class_names, templates)
        size = clip.visual.image_size
        self.preprocess = ClipPreprocess(size[0] if isinstance(size, (tuple, list)) else size)
        self.backbone = clip.visual
        clip.visual = None  # the image tower lives here once; the head keeps the rest (the text tower) if it trains
        prompts = torch.cat([tokenizer([t.format(c) for t in templates]) for c in class_names])
        text = clip if train_mode in ("whole", "text") else None
        self.head = ClipHead(text, prompts, len(templates), weights, clip.logit_scale.item(), train_mode)
        self.feature_dim, self.head_kind, self.train_mode = weights.shape[1], "clip", train_mode
        for p in self.backbone.parameters():
            p.requires_grad_(train_mode in ("whole", "image", "image_fc", "image_fc_fixed"))
        if text is not None:
            for name, p in text.named_parameters():
                p.requires_grad_(name != "logit_scale")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def register_config_file(path: str) -> None:
    """Make an open_clip model config JSON (e.g. a tiny one for tests) known by its file stem."""
    import open_clip

    open_clip.add_model_config(path)


def build_clip_net(options: dict[str, Any], class_names: Sequence[str], load_weights: bool = True,
                   dataset: str | None = None) -> ClipNet:
    """The ClipNet a backbone config describes; ``load_weights=False`` skips the pretrained file (a checkpoint follows)."""
    if options.get("model_config"):
        register_config_file(options["model_config"])
    model, tokenizer = load_open_clip(options["model"], options["pretrained"] if load_weights else None,
                                      options.get("cache_dir"))
    templates = options.get("templates") or "auto"
    if isinstance(templates, str):
        key = dataset if templates == "auto" else templates
        if key not in TEMPLATES and templates != "auto":
            raise KeyError(f"unknown template set {templates!r}; valid: auto, {', '.join(sorted(TEMPLATES))}, or a list")
        templates = TEMPLATES.get(key, TEMPLATES["default"])
    return ClipNet(model, tokenizer, [name.replace("_", " ") for name in class_names], options["train_mode"],
                   templates)
