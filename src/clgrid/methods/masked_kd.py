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
number per channel), ``scalar_frozen`` / ``vector_frozen`` (zero, never trained). Every token
starts at zero. The loop's optimizer sees only ``model.parameters()``, and registering the
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

TOKEN_MODES = ("scalar", "vector", "scalar_frozen", "vector_frozen")
INVERSE_MODES = ("none", "v1", "v2")


def sample_channel_mask(batch: int, dim: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """A (batch, dim) boolean mask with exactly round(ratio·dim) True channels per row, chosen at random per row,
    on the generator's device."""
    n_masked = round(ratio * dim)
    ranks = torch.rand(batch, dim, generator=generator, device=generator.device).argsort(dim=1).argsort(dim=1)
    return ranks < n_masked


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
                            "scalar_frozen / vector_frozen (zero, never trained); learnable tokens start at zero"),
            "enum": ["scalar", "vector", "scalar_frozen", "vector_frozen"], "default": "scalar",
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
        shape = (model.feature_dim,) if self.params["token_mode"].startswith("vector") else (1,)
        self.token_trainable = not self.params["token_mode"].endswith("_frozen")
        self.mask_token = torch.zeros(shape, device=device, requires_grad=self.token_trainable)

    def own_step_parameters(self) -> list[torch.Tensor]:
        return [self.mask_token] if self.token_trainable else []

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        self.mask_token.grad = None

    def distillation_pair(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.features(x)
        if self.params["cls_only"]:
            features = features.detach()
        with torch.no_grad():
            teacher_logits = self.teacher.model.head(features) if self.params["cls_only"] else self.teacher.model(x)
        generator = mask_generator(self.generator, self.teacher.task_step, features.device)
        mask = sample_channel_mask(*features.shape, self.params["mask_ratio"], generator).to(features.device)
        student_logits = self.model.head(mask_features(features, mask, self.mask_token))
        inverse = self.params["inverse"]
        if inverse != "none":
            with torch.no_grad():
                inverse_logits = self.model.head(mask_features(features, ~mask, self.mask_token))
            if inverse == "v1":
                student_logits = student_logits + inverse_logits
            else:
                teacher_logits = teacher_logits - inverse_logits
        return student_logits, teacher_logits

    @torch.no_grad()
    def after_step(self) -> None:
        super().after_step()
        if self.token_trainable and self.mask_token.grad is not None:
            self.mask_token.sub_(self.mask_token.grad, alpha=self.params["token_lr"])
        self.mask_token.grad = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mask_token": self.mask_token.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.mask_token.copy_(state["mask_token"])
