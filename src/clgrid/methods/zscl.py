"""ZSCL: zero-shot continual learning of CLIP (Zheng et al. 2023, ICCV, "Preventing Zero-Shot Transfer Degradation
in Continual Learning of Vision-Language Models"), as its reference code does it.

    L = CE_ls(s · f(x) g(c)ᵀ, y)                                       task loss, label smoothing 0.2
      + λ_d · T² · [ CE(softmax(z_t/T), softmax(z_s/T))               image → text
                   + CE(softmax(z_tᵀ/T), softmax(z_sᵀ/T)) ]           text → image
      + λ_2 · ‖θ − θ_start‖²                                           optional, toward the task's start weights

with, on a batch of reference images x_r and reference sentences r,

    z_s = s · norm(f(x_r)) · norm(g₀(r))ᵀ      the student's image features against the teacher's text features
    z_t = s · norm(f₀(x_r)) · norm(g₀(r))ᵀ     the frozen initial CLIP (f₀, g₀) on both sides

(CE of soft targets, as the reference code's ``distillation``; temperature 2). The student's text encoder does not
appear in z_s, so it gets no gradient from distillation. Weight ensembling: every ``ensemble_every`` optimizer
steps the running mean θ̄ ← θ̄ + (θ − θ̄)/(k + 1) of the weights (θ̄ starts at the task's start weights, k counts
updates) absorbs the current weights; at the task's end θ̄ is loaded into the model, so the averaged model is the
one saved and passed on.

The teacher is needed only on the reference set, so at the first task its image features of the (fixed) reference
images and its text features of the reference sentences are computed once and carried in the method state, not a
second CLIP. Reference images: ``reference_size`` training images of ``reference_dataset`` (any registered or
imported dataset; the paper uses an ImageNet subset), else of the first task's training data. Reference sentences: ``reference_sentences`` (a list, or
the path of a text file with one caption per line), else a small built-in list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register, stored, take

BUILTIN_SENTENCES = [
    "a photo of a dog playing in the park.", "a red car parked on the street.", "a plate of food on a table.",
    "a bird sitting on a branch.", "a man riding a bicycle.", "a group of people standing outside.",
    "a cat sleeping on a sofa.", "an airplane flying in the sky.", "a bowl of fruit.", "a house with a garden.",
    "a close-up photo of a flower.", "a boat on the water.", "a child holding a ball.", "a city skyline at night.",
    "a horse in a field.", "a handwritten number on paper.", "a texture of wood.", "a satellite image of farmland.",
    "a train at a station.", "a plate of pasta.",
]


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · mean over rows of −Σ softmax(teacher/T) · log_softmax(student/T) (ZSCL's ``distillation``)."""
    targets = F.softmax(teacher_logits / temperature, dim=-1)
    return -(targets * F.log_softmax(student_logits / temperature, dim=-1)).sum(dim=-1).mean() * temperature**2


def read_sentences(source: Any) -> list[str]:
    if source is None:
        return list(BUILTIN_SENTENCES)
    if isinstance(source, str):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"zscl reference_sentences: no file {source!r} (one caption per line)")
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"zscl reference_sentences: {source!r} holds no caption")
        return lines
    return [str(s) for s in source]


@register("zscl")
class ZSCL(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "label_smoothing": {
            "description": "label smoothing of the task loss (ZSCL code uses 0.2)",
            "type": "number", "minimum": 0, "maximum": 1, "default": 0.2,
        },
        "temperature": {
            "description": "distillation temperature T, loss scaled by T² (ZSCL uses 2)",
            "type": "number", "exclusiveMinimum": 0, "default": 2.0,
        },
        "distill_weight": {
            "description": "weight of the image-text distillation on reference images (both directions)",
            "type": "number", "minimum": 0, "default": 1.0,
        },
        "l2_weight": {
            "description": "weight of ‖θ − θ_start‖² toward the weights at the task's start (0 = off)",
            "type": "number", "minimum": 0, "default": 0.0,
        },
        "ensemble_every": {
            "description": "optimizer steps between weight-ensembling updates of the running mean (0 = no ensembling)",
            "type": "integer", "minimum": 0, "default": 10,
        },
        "reference_size": {
            "description": "reference images, drawn once (from reference_dataset, else the first task's training data)",
            "type": "integer", "minimum": 1, "default": 1000,
        },
        "reference_batch_size": {
            "description": "reference images per step",
            "type": "integer", "minimum": 1, "default": 64,
        },
        "reference_dataset": {
            "description": ("registered (or imported) dataset whose training images are the reference images, e.g. the "
                            "paper's ImageNet subset or cifar100 (null = the first task's training data); its prepared "
                            "file becomes an input of the run's training jobs"),
            "type": ["string", "null"], "default": None,
        },
        "reference_sentences": {
            "description": "reference captions, a list or a text file with one per line (null = a built-in list of 20)",
            "type": ["array", "string", "null"], "items": {"type": "string"}, "minItems": 1, "default": None,
        },
    }
    FACTS: dict[str, Any] = {
        "paper": "Zheng et al. 2023, ICCV",
        "needs_clip": True,
        "feature_cache_unsupported": "it distils the image encoder on reference images",
        "dataset_params": ["reference_dataset"],
        "reference_params": ["reference_size"],
    }

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        head = getattr(model, "head", None)
        if getattr(model, "head_kind", None) != "clip":
            raise ValueError("zscl distils CLIP's image-text logits: use a backbone with arch: clip")
        self.text_model = getattr(head, "text", None)
        self.reference_x: torch.Tensor | None = None  # fixed reference images (uint8), chosen at the first task
        self.reference_on_device: torch.Tensor | None = None  # the same, on the model's device during a task
        self.teacher_image: torch.Tensor | None = None  # norm(f₀(x_r)), one row per reference image
        self.teacher_text: torch.Tensor | None = None  # norm(g₀(r)), one row per reference sentence
        self.start_weights: dict[str, torch.Tensor] = {}
        self.average_weights: dict[str, torch.Tensor] = {}
        self.ensemble_count = 0
        self.steps = 0
        self._paired: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # (θ̄, θ) tensors, per task

    def _float_weights(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().clone() for n, t in self.model.state_dict().items() if t.is_floating_point()}

    @torch.no_grad()
    def _init_teacher(self, task: TaskData) -> None:
        """At the first task: the reference set and the initial CLIP's features on it (the whole teacher ZSCL needs)."""
        if self.text_model is None:
            raise ValueError("zscl needs CLIP's text encoder for the reference sentences: use train_mode whole or text")
        if self.params["reference_dataset"]:
            if self.reference_images is None:
                raise ValueError(f"zscl reference_dataset {self.params['reference_dataset']!r}: the job gave no "
                                 "images of it (run it through clgrid train, which loads the dataset)")
            self.reference_x = self.reference_images(self.params["reference_size"], self.generator).cpu()
        else:
            pick = torch.randperm(len(task.y), generator=self.generator, device="cpu")
            self.reference_x = take(task.x, pick[: self.params["reference_size"]].sort().values).cpu()
        # Under the run's precision, kept in fp32 (``stored``), as every method keeps what it computed.
        self.teacher_image = F.normalize(stored(self.features_of(self.reference_x, 256)), dim=-1)
        tokens = self._tokenize(read_sentences(self.params["reference_sentences"])).to(self.device)
        was_training = self.model.training
        self.model.eval()
        with self.autocast():
            self.teacher_text = F.normalize(stored(self.text_model.encode_text(tokens)), dim=-1)
        self.model.train(was_training)

    def _tokenize(self, sentences: list[str]) -> torch.Tensor:
        import open_clip

        context = self.model.head.prompts.shape[1]
        return open_clip.tokenize(sentences, context_length=context)

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        if self.teacher_image is None:
            self._init_teacher(task)
        self.start_weights = self._float_weights()
        self.average_weights = self._float_weights()
        self.ensemble_count, self.steps = 0, 0
        self._paired = None
        # Once per task, not a gather and a copy of a reference batch every step (the images are kept in host
        # memory between tasks and saved from there).
        self.reference_on_device = self.reference_x.to(self.teacher_image.device)

    def reference_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch of reference images and the teacher's features of them (drawn with the task generator).

        The indices are drawn on the host from the task's generator, on every device (the same draws as on the
        CPU), and go to the device without waiting for it: a copy of a pageable host tensor with
        ``non_blocking`` returns once the driver has staged it. The images are gathered there.
        """
        n = len(self.reference_x)
        idx = torch.randint(n, (min(self.params["reference_batch_size"], n),), generator=self.generator, device="cpu")
        on_device = idx.to(self.teacher_image.device, non_blocking=True)
        if self.reference_on_device is None:  # called outside a task (no before_task): gathered on the host
            return self.reference_x[idx].to(self.device), self.teacher_image[on_device]
        return self.reference_on_device[on_device], self.teacher_image[on_device]

    def distillation(self, x_ref: torch.Tensor, teacher_image: torch.Tensor) -> torch.Tensor:
        """Both directions of image-text distillation on one reference batch (see the module docstring)."""
        scale = self.model.head.logit_scale.exp()
        student = scale * F.normalize(self.model.features(x_ref), dim=-1) @ self.teacher_text.t()
        teacher = scale * teacher_image @ self.teacher_text.t()
        t = self.params["temperature"]
        return soft_cross_entropy(student, teacher, t) + soft_cross_entropy(student.t(), teacher.t(), t)

    def l2_to_start(self) -> torch.Tensor:
        params = [(p, self.start_weights[n]) for n, p in self.model.named_parameters()
                  if p.requires_grad and n in self.start_weights]
        return sum(((p - s) ** 2).sum() for p, s in params)

    def loss(self, x, y, logits):
        loss = F.cross_entropy(logits, y, label_smoothing=self.params["label_smoothing"])
        if self.params["distill_weight"]:
            loss = loss + self.params["distill_weight"] * self.distillation(*self.reference_batch())
        if self.params["l2_weight"]:
            loss = loss + self.params["l2_weight"] * self.l2_to_start()
        return loss

    def _averaged_and_current(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """θ̄'s tensors and the model's, paired by name: built at the first ensembling of a task and reused
        (``keep_vars``: the ``Parameter`` objects, whose data a channels-last layout swaps in place)."""
        if self._paired is None:
            current = self.model.state_dict(keep_vars=True)
            self._paired = (list(self.average_weights.values()), [current[n] for n in self.average_weights])
        return self._paired

    @torch.no_grad()
    def after_step(self) -> None:
        self.steps += 1
        every = self.params["ensemble_every"]
        if every and self.steps % every == 0:
            self.ensemble_count += 1
            if not self.average_weights:
                return
            # θ̄ ← θ̄ + (θ − θ̄)/(k + 1) in three foreach calls over all tensors; on the CPU the same per-tensor ops
            # (a difference, a division, an in-place add) as a loop, so the same bits.
            averages, current = self._averaged_and_current()
            step = torch._foreach_sub(current, averages)
            torch._foreach_div_(step, self.ensemble_count + 1)
            torch._foreach_add_(averages, step)

    @torch.no_grad()
    def after_task(self, task: TaskData) -> None:
        if self.params["ensemble_every"]:
            for n, weight in self.model.state_dict().items():
                if n in self.average_weights and not torch.equal(weight, self.start_weights[n]):
                    weight.copy_(self.average_weights[n])
        self.start_weights, self.average_weights, self._paired, self.reference_on_device = {}, {}, None, None
        super().after_task(task)

    def task_state(self) -> dict[str, Any]:
        return {"average_weights": self.average_weights, "ensemble_count": self.ensemble_count, "steps": self.steps}

    def load_task_state(self, state: dict[str, Any]) -> None:
        self.average_weights = self.on_device(state["average_weights"])
        self._paired = None  # new tensors
        self.ensemble_count, self.steps = int(state["ensemble_count"]), int(state["steps"])

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "reference_x": self.reference_x, "teacher_image": self.teacher_image,
                "teacher_text": self.teacher_text}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("reference_x") is not None:
            self.reference_x = state["reference_x"]
            if self.reference_on_device is not None:  # loaded within a task (a resumed one): the device copy too
                self.reference_on_device = self.reference_x.to(self.device)
            self.teacher_image = state["teacher_image"].to(self.device)
            self.teacher_text = state["teacher_text"].to(self.device)
