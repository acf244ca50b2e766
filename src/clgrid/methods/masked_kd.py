"""Masked-feature distillation: the student's head must reproduce the teacher from partly masked features.

    L = CE(z, y) + λ · T² · KL(softmax(z_T / T) ‖ softmax(h_S(f̃) / T)),   f̃ = (1 − M) ⊙ f + M ⊙ t

f = backbone_S(x) is the student's feature, M a random 0/1 mask of exactly round(r·D) of
its D channels, drawn per sample (r = ``mask_ratio``), t the mask token, h_S the student's
head and z_T the teacher's logits on the *unmasked* input. Masking part of the student's
feature and asking for the teacher's full output follows Masked Generative Distillation
(Yang et al. 2022, ECCV; its classification setting masks λ = 0.5 of the feature, our
default ``mask_ratio``); the replacement token follows the mask token of MAE (He et al.
2022, CVPR). The other defaults are those of ``kd_ema`` (teacher, λ, T).

``token_mode``: ``scalar`` (one learnable number for every channel), ``vector`` (one learnable
number per channel), ``scalar_frozen`` / ``vector_frozen`` (zero, never trained), ``slots`` /
``slots_frozen`` (the masked-model study's mask modes 'a' / 'agf', MAE's gather-and-restore:
one learnable number per *mask slot*, round(r·D) of them, the k-th going to the masked
channel of the k-th smallest draw of that sample, so a slot lands on a different channel for each
sample; and, for the inverse branch, a second token of D − round(r·D) slots for the kept
channels, in the same order). The study's 's' / 'sgf' are ``scalar`` / ``scalar_frozen``. Every
token starts at zero. The loop's optimizer sees only ``model.parameters()``, and registering the
token on the model would change the keys of ``model.state_dict()`` that the next job loads
into a plain model; so the method keeps the token, and after each optimizer step takes a
plain SGD step on it, t ← t − ``token_lr``·∂L/∂t (0.05 = the default config's lr). It is
saved in ``state_dict``.

``inverse`` adds a branch through the complementary mask, M̄ = 1 − M, with its gradient
stopped (no gradient reaches the model or the token through it), z̄ = h_S((1 − M̄) ⊙ f + M̄ ⊙ t):
``v1`` distils h_S(f̃) + z̄ instead of h_S(f̃); ``v2`` distils h_S(f̃) towards z_T − z̄;
``none`` has no inverse branch.

The teacher is ``kd_ema``'s (``teacher``: ema, anneal, swa, or frozen = the student at task
start). ``cls_only``: f is taken with its gradient stopped and the teacher's logits are
h_T(f) (the teacher's head on the student's features), so only the head is distilled.
With ``mask_ratio`` 0 and ``inverse`` none this is exactly ``kd_ema``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from clgrid.methods.base import TaskData, register
from clgrid.methods.kd_ema import KDEMA

TOKEN_MODES = ("scalar", "vector", "scalar_frozen", "vector_frozen", "slots", "slots_frozen")
INVERSE_MODES = ("none", "v1", "v2")


def sample_channel_ranks(batch: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, dim): each channel's rank (0..dim−1) in a fresh uniform draw per row, on the generator's device."""
    return torch.rand(batch, dim, generator=generator, device=generator.device).argsort(dim=1).argsort(dim=1)


def sample_channel_mask(batch: int, dim: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """A (batch, dim) boolean mask with exactly round(ratio·dim) True channels per row, chosen at random per row,
    on the generator's device."""
    return sample_channel_ranks(batch, dim, generator) < round(ratio * dim)


def slot_tokens(ranks: torch.Tensor, n_masked: int, token: torch.Tensor, inverse_token: torch.Tensor) -> torch.Tensor:
    """(batch, dim): the value a slot token puts on each channel. A masked channel (rank k < n_masked) takes
    ``token[k]``; a kept one (rank k ≥ n_masked) ``inverse_token[k − n_masked]``."""
    return torch.cat([token, inverse_token])[ranks]


def mask_generator(task_generator: torch.Generator, step: int, device: torch.device) -> torch.Generator:
    """What the channel mask of optimizer step ``step`` of a task is drawn with on ``device``.

    Off CUDA: the task's generator (the CPU's stream, as it always was). On CUDA: a generator on the device, seeded
    from the task generator's seed and the step, so the mask is drawn and ranked where the features are, instead
    of a (batch × feature_dim) draw and two argsorts on the host and a copy every step (at batch 256, 512
    channels: about 6 ms of host work per step). Its seed consumes nothing of the task's generator, and a
    resumed task (which restores the step count) draws the same masks. A CUDA run's masks differ from a CPU
    run's, and as the task generator no longer draws them, so do its later batch orders.
    """
    if device.type != "cuda":
        return task_generator
    seed = int(np.random.SeedSequence([task_generator.initial_seed(), step]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed)


def mask_features(features: torch.Tensor, mask: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """Channels where ``mask`` is True take the token's value; the rest keep the feature (bit for bit)."""
    return torch.where(mask, token.expand_as(features), features)


@register("masked_kd")
class MaskedKD(KDEMA):
    PARAMS: dict[str, dict[str, Any]] = {
        "mask_ratio": {
            "description": ("share of feature channels replaced by the mask token, per sample (0.5: MGD, Yang et al. "
                            "2022, classification)"),
            "type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
        },
        "token_mode": {
            "description": ("mask token: scalar (one learnable value), vector (one learnable value per channel), "
                            "scalar_frozen / vector_frozen (zero, never trained), slots / slots_frozen (one value per "
                            "mask slot in the draw's order, and one per kept slot for the inverse branch: the "
                            "masked-model study's 'a' / 'agf'); learnable tokens start at zero"),
            "enum": ["scalar", "vector", "scalar_frozen", "vector_frozen", "slots", "slots_frozen"],
            "default": "scalar",
        },
        "token_lr": {
            "description": "learning rate of the method's own SGD step on a learnable mask token",
            "type": "number", "minimum": 0, "default": 0.05,
        },
        "inverse": {
            "description": ("branch through the complementary mask, gradient stopped: none; v1 adds its logits to the "
                            "masked student's logits; v2 subtracts them from the teacher's logits (the target)"),
            "enum": ["none", "v1", "v2"], "default": "none",
        },
    }
    FACTS: dict[str, Any] = {"paper": "Yang et al. 2022, ECCV (MGD)"}

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        if self.params["token_mode"] not in TOKEN_MODES:
            raise ValueError(f"unknown token_mode '{self.params['token_mode']}'; valid: {', '.join(TOKEN_MODES)}")
        if self.params["inverse"] not in INVERSE_MODES:
            raise ValueError(f"unknown inverse '{self.params['inverse']}'; valid: {', '.join(INVERSE_MODES)}")
        if not 0 <= self.params["mask_ratio"] <= 1:
            raise ValueError(f"mask_ratio must lie in [0, 1], got {self.params['mask_ratio']}")
        device = next(model.parameters()).device
        mode = self.params["token_mode"]
        self.slots = mode.startswith("slots")
        self.n_masked = round(self.params["mask_ratio"] * model.feature_dim)
        shape = (model.feature_dim,) if mode.startswith("vector") else (self.n_masked,) if self.slots else (1,)
        self.token_trainable = not mode.endswith("_frozen")
        self.mask_token = torch.zeros(shape, device=device, requires_grad=self.token_trainable)
        # slots: the kept channels' token of the inverse branch (the study's mask_tokeninv); else none
        self.inverse_token = torch.zeros(model.feature_dim - self.n_masked, device=device,
                                         requires_grad=self.token_trainable) if self.slots else None

    def tokens(self) -> list[torch.Tensor]:
        return [self.mask_token] + ([self.inverse_token] if self.slots else [])

    def own_step_parameters(self) -> list[torch.Tensor]:
        return self.tokens() if self.token_trainable else []

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        for token in self.tokens():
            token.grad = None

    def distillation_pair(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.features(x)
        if self.params["cls_only"]:
            features = features.detach()
        with torch.no_grad():
            teacher_logits = self.teacher.model.head(features) if self.params["cls_only"] else self.teacher.model(x)
        generator = mask_generator(self.generator, self.teacher.task_step, features.device)
        if self.slots:
            ranks = sample_channel_ranks(*features.shape, generator).to(features.device)
            mask = ranks < self.n_masked
            token = inverse_token = slot_tokens(ranks, self.n_masked, self.mask_token, self.inverse_token)
        else:
            mask = sample_channel_mask(*features.shape, self.params["mask_ratio"], generator).to(features.device)
            token = inverse_token = self.mask_token
        student_logits = self.model.head(mask_features(features, mask, token))
        inverse = self.params["inverse"]
        if inverse != "none":
            with torch.no_grad():
                inverse_logits = self.model.head(mask_features(features, ~mask, inverse_token))
            if inverse == "v1":
                student_logits = student_logits + inverse_logits
            else:
                teacher_logits = teacher_logits - inverse_logits
        return student_logits, teacher_logits

    @torch.no_grad()
    def after_step(self) -> None:
        super().after_step()
        for token in self.tokens():
            if self.token_trainable and token.grad is not None:
                token.sub_(token.grad, alpha=self.params["token_lr"])
            token.grad = None

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "mask_token": self.mask_token.detach().clone()}
        if self.slots:
            state["inverse_token"] = self.inverse_token.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.mask_token.copy_(state["mask_token"])
            if self.slots:
                self.inverse_token.copy_(state["inverse_token"])
