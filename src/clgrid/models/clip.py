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

TRAIN_MODES = ("whole", "image", "text", "image_fc", "image_fc_fixed", "fc")
DEFAULT_TEMPLATES = ("a photo of a {}.",)


class WeightsMissingError(FileNotFoundError):
    """Pretrained weights are neither at the given path nor in the cache, and there is no network."""


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
        where = cache_dir or os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
        raise WeightsMissingError(
            f"open_clip weights {model_name}/{pretrained} are not available: not a file, not in the cache ({where}), "
            f"and no network (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). On a machine with network run "
            f"`python -c \"import open_clip; open_clip.create_model_and_transforms('{model_name}', "
            f"pretrained='{pretrained}')\"` and copy {where} here, or save the state_dict to a file and give its "
            f"path as pretrained. ({type(err).__name__}: {str(err).splitlines()[0]})") from err
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


class ClipClassifier(nn.Module):
    """CLIP as a classifier over a scenario's class names, trained in one of ``TRAIN_MODES``.

    ``features`` are the L2-normalised image embeddings (what CKA, RankMe and feature-based methods read);
    ``forward`` returns ``logit_scale ·`` cosine logits, so cross-entropy on them is CLIP's own objective.
    """

    def __init__(self, clip: nn.Module, tokenizer, class_names: Sequence[str], train_mode: str = "whole",
                 templates: Sequence[str] = DEFAULT_TEMPLATES):
        super().__init__()
        if train_mode not in TRAIN_MODES:
            raise KeyError(f"unknown CLIP train_mode {train_mode!r}; valid: {', '.join(TRAIN_MODES)}")
        self.clip, self.tokenizer, self.train_mode = clip, tokenizer, train_mode
        self.templates = list(templates)
        self.class_names = list(class_names)
        self.register_buffer("prompts", torch.cat([tokenizer([t.format(c) for t in self.templates])
                                                   for c in self.class_names]), persistent=False)
        weights = zero_shot_weights(clip.encode_text, tokenizer, self.class_names, self.templates)
        self.head = nn.Linear(weights.shape[1], len(self.class_names), bias=False)
        self.head.weight.data.copy_(weights)
        self.register_buffer("text_weights", weights.clone())
        self._set_trainable()

    def _set_trainable(self) -> None:
        mode = self.train_mode
        image = mode in ("whole", "image", "image_fc", "image_fc_fixed")
        text = mode in ("whole", "text")
        head = mode in ("image_fc", "fc")
        for name, param in self.clip.named_parameters():
            in_image = name.startswith("visual.")
            param.requires_grad_(image if in_image else text if name != "logit_scale" else False)
        self.head.weight.requires_grad_(head)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(x), dim=-1)

    def class_embeddings(self) -> torch.Tensor:
        """The classifier's rows: from the text encoder (with grad) in whole/text modes, else head or buffer."""
        if self.train_mode in ("whole", "text"):
            n = len(self.templates)
            emb = F.normalize(self.clip.encode_text(self.prompts), dim=-1)
            return F.normalize(emb.view(len(self.class_names), n, -1).mean(dim=1), dim=-1)
        if self.train_mode == "image":
            return self.text_weights
        return self.head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.logit_scale.exp() * self.features(x) @ self.class_embeddings().t()
