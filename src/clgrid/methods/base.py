"""The method interface: the hooks the training loop calls, and the registry of names."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from clgrid.methods.parts.ncm import fold_class_means, nearest_mean_scores


@dataclass
class TaskData:
    """One task's training (or test) split.

    ``y`` is on the training device; ``x`` too, unless the dataset is too large for it (``loader`` is then set:
    ``x`` stays in host memory and the loop streams batches through a DataLoader). Index ``x`` with ``take``,
    so the same method code serves both placements.
    """

    task_id: int
    x: torch.Tensor
    y: torch.Tensor
    classes: list[int]
    loader: dict[str, Any] | None = None  # {"num_workers": n, "pin_memory": bool} for host-resident inputs
    # How a method's ``training_data`` schedules the task (defaults: every sample once per epoch in a random order):
    # the order of the samples in one epoch, batched in turn (dml: class-balanced batches), and whether the loop
    # takes any step on it at all (False: an index-only task; ``before_task`` and ``after_task`` still run).
    epoch_order: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    trains: bool = True

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """One epoch's order of the samples: ``epoch_order`` when the method set one, else a random permutation."""
        if self.epoch_order is not None:
            return self.epoch_order(self.y, generator)
        return torch.randperm(len(self.y), generator=generator)

    def with_samples(self, x: torch.Tensor, y: torch.Tensor, classes: list[int]) -> "TaskData":
        """The same task and placement (loader) with other samples: what a method's ``training_data`` returns, so
        data it assembles (a union of tasks, a memory) is streamed like the task's own."""
        return dataclasses.replace(self, x=x, y=y, classes=list(classes))


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` wherever the two live: inputs may sit in host memory while indices come from device labels."""
    return x[index.to(x.device)]


def freeze_backbone(model: nn.Module, mode: str, k: int = 1) -> list[str]:
    """Stop gradients to the backbone: ``all`` of it, or its ``first_k`` children that hold parameters.

    Returns the names of the frozen modules. Frozen weights get ``requires_grad=False``,
    so the loop's optimizer never sees them and they stay bit-identical.
    """
    if mode == "none":
        return []
    backbone = model.backbone
    if mode == "all":
        frozen = [("backbone", backbone)]
    elif mode == "first_k":
        from clgrid.models import backbone_blocks

        blocks = backbone_blocks(model)
        if not 1 <= k <= len(blocks):
            raise ValueError(f"freeze_k = {k}, but the backbone has {len(blocks)} blocks with weights: "
                             f"{[f'backbone.{name}' for name in blocks]}")
        frozen = [(f"backbone.{name}", backbone.get_submodule(name)) for name in blocks[:k]]
    else:
        raise ValueError(f"unknown freeze mode '{mode}'; valid: all, first_k, none")
    for _, module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return [n for n, _ in frozen]


class Method:
    """Naive fine-tuning; every other method overrides a few of these hooks.

    Order per task: ``training_data`` → ``before_task`` → for each batch
    ``loss``, backward, ``after_backward``, optimizer step, ``after_step`` →
    ``after_task``. ``state_dict`` must hold everything the next task's job needs.
    ``defaults`` holds the method's own hyperparameters (the schema repeats them;
    a test checks they agree); ``params`` overrides them.

    Where things live, the rule every method follows (so a run behaves the same with its data on the GPU or in
    host memory): stored *inputs* (replay buffers, exemplars, memories) live where the training inputs live,
    ``inputs_device`` (the model's device unless the job streams host-resident data); labels and everything
    else live on the model's device. Inputs go to the model through ``on_compute`` (a stored draw) or
    ``features_of`` (many stored inputs, in batches). Stored floating-point values (logits, means, Fisher) are
    fp32 whatever the autocast they were computed under (``stored``), so a state moves between precisions.

    What a method needs from the job comes with it at construction (``inputs_device``, ``precision``, the
    benchmark's training ``augment``ation, a ``reference_images(n, generator)`` sampler of another dataset's
    training images): subclasses take them as ``**context`` and pass them on to this constructor unchanged. Nothing
    outside a method sets its attributes.

    One precision per run: the loop runs ``loss`` under the run's autocast (``precision``, a
    ``clgrid.device.Precision``; None: fp32) and evaluation runs ``predict`` under it; forward passes a method
    makes in other hooks to compute what it keeps or compares (class means, exemplar features, embeddings of an
    index) run under it too, through ``autocast()`` (``features_of`` and ``embed`` do). Gradients a hook computes
    itself (Fisher, A-GEM's reference gradient, OGD's basis) stay fp32: fp16 would need loss scaling of its own.
    """

    name = "naive"
    # Options every method takes: the config schema's ``$defs/common_method_params``, built from this declaration.
    PARAMS: dict[str, dict[str, Any]] = {
        "freeze": {
            "description": ("keep backbone weights fixed: none; all (the whole backbone, e.g. a pretrained encoder with"
                            " a trained head); first_k (the first freeze_k blocks of the backbone that hold weights)"),
            "enum": ["none", "all", "first_k"], "default": "none",
        },
        "freeze_k": {
            "description": "number of leading backbone blocks frozen by freeze first_k",
            "type": "integer", "minimum": 1, "default": 1,
        },
        "lr_scale": {
            "description": ("factor on the benchmark's learning rate for this method (methods differ in the step size "
                            "they tolerate, e.g. LoRA's B·A product diverges at a step plain fine-tuning takes)"),
            "type": "number", "exclusiveMinimum": 0, "default": 1.0,
        },
    }
    FACTS: dict[str, Any] = {}
    defaults: dict[str, Any] = {}  # the class's own hyperparameters' defaults (those of PARAMS it adds), derived
    needs_clip = False
    retrieval = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Derive ``defaults`` and the facts the job reads (``needs_clip``, ``retrieval``) from the declarations,
        merged along the class's bases as ``clgrid.catalog.methods`` merges them without importing the module."""
        super().__init_subclass__(**kwargs)
        cls.defaults = {key: field["default"] for key, field in declared_params(cls).items()
                         if key not in Method.PARAMS}
        facts = declared_facts(cls)
        cls.needs_clip = bool(facts.get("needs_clip", False))
        cls.retrieval = bool(facts.get("retrieval", False))

    def __init__(self, model: nn.Module, params: dict[str, Any], n_classes: int,
                 inputs_device: torch.device | str | None = None, precision: Any = None,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 reference_images: Callable[[int, torch.Generator], torch.Tensor] | None = None):
        self.model = model
        self.inputs_device = torch.device(inputs_device) if inputs_device is not None else self.device
        self.precision = precision
        self.params = {**COMMON_DEFAULTS, **self.defaults, **params}
        self.n_classes = n_classes
        self.generator: torch.Generator | None = None
        self.seen_classes: list[int] = []
        self.frozen_modules = freeze_backbone(model, self.params["freeze"], int(self.params["freeze_k"]))
        # Nearest-class-mean head (backbone option ``head: ncm``): class -> mean feature.
        self.class_means: dict[int, torch.Tensor] = {}
        self.class_counts: dict[int, int] = {}  # samples behind each mean, so a class met again is pooled
        # The benchmark's training augmentation (buffer methods augment their draws like the current batch).
        self.augment: Callable[[torch.Tensor], torch.Tensor] = augment if augment is not None else _unchanged
        # Draws training images of a dataset the method names (ZSCL's reference_dataset): (n, generator) -> images.
        self.reference_images = reference_images
        self._unaugmented: torch.Tensor | None = None  # the current batch before augmentation (unaugmented_batch)

    def unaugmented_batch(self, inputs: torch.Tensor | None) -> None:
        """The loop passes each batch as drawn, before the benchmark's augmentation, ahead of ``loss`` (and None
        once the batch's step is done; never when the benchmark does not augment): what a buffer stores."""
        self._unaugmented = inputs

    def batch_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The current batch before augmentation (``unaugmented_batch``), else ``x``: what a buffer should store."""
        return self._unaugmented if self._unaugmented is not None else x

    @property
    def device(self) -> torch.device:
        """Where the model lives, so loaded state and new tensors go there too."""
        return next(self.model.parameters()).device

    def on_device(self, tensors: dict[Any, torch.Tensor]) -> dict[Any, torch.Tensor]:
        """A loaded name → tensor mapping moved to the model's device."""
        return {k: t.to(self.device) for k, t in tensors.items()}

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's autocast (bf16 / fp16), or nothing in fp32: for a hook's forward passes."""
        return self.precision.autocast() if self.precision is not None else contextlib.nullcontext()

    def on_compute(self, x: torch.Tensor) -> torch.Tensor:
        """Stored or host-resident inputs on the model's device (a no-op where they already are)."""
        return x.to(self.device, non_blocking=True)

    def to_inputs_device(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """Inputs to keep (a buffer, a memory) where the training inputs live."""
        return None if x is None else x.to(self.inputs_device)

    @torch.no_grad()
    def features_of(self, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """The backbone's features of ``x`` (stored or host-resident inputs) in eval mode, in batches moved to the
        model's device one at a time, under the run's precision (``autocast``)."""
        was_training = self.model.training
        self.model.eval()
        with self.autocast():
            feats = torch.cat([self.model.features(self.on_compute(x[i : i + batch]))
                               for i in range(0, len(x), batch)])
        self.model.train(was_training)
        return feats

    def training_data(self, task: TaskData, load_task: Callable[[int], TaskData]) -> TaskData:
        """The data to train on for ``task``, and how (``TaskData.epoch_order``, ``TaskData.trains``);
        ``load_task(i)`` gives any earlier task's training split."""
        return task

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """What the loop hands to ``loss`` for a batch: the model's logits (metric learning: embeddings)."""
        return self.model(x)

    def extra_parameters(self) -> list[torch.Tensor]:
        """Trainable tensors outside the model that the loop's optimizer also steps (an embedding head, proxies)."""
        return []

    def own_step_parameters(self) -> list[torch.Tensor]:
        """Trainable tensors the method steps itself in ``after_step`` (outside the loop's optimizer, e.g. a mask
        token with its own learning rate). The loop treats their gradients as the optimizer's: cleared before each
        backward, unscaled under fp16 loss scaling, and a step whose gradients overflowed is skipped for them too."""
        return []

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        """Vectors for nearest-neighbour retrieval (the retrieval evaluation): the backbone's features."""
        if not len(x):
            return torch.zeros(0, getattr(self.model, "feature_dim", 0))
        return self.features_of(x, batch).float().flatten(1)

    def loss(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def after_backward(self) -> None:
        """Edit gradients in place before the optimizer step (gradient-projection methods)."""

    def after_step(self) -> None:
        """Runs after each optimizer step (EMA teachers, path integrals, weight averages)."""

    def train_mode(self) -> None:
        """Put the model in training mode, except frozen modules (their BatchNorm statistics must not move)."""
        self.model.train()
        for name in self.frozen_modules:
            self.model.get_submodule(name).eval()

    def after_task(self, task: TaskData) -> None:
        self.seen_classes = sorted(set(self.seen_classes) | set(task.classes))
        if getattr(self.model, "head_kind", "linear") == "ncm":
            fold_class_means(self.class_means, self.class_counts, stored(self.features_of(task.x)), task.y)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Scores per class used at evaluation; the model's logits unless the method classifies otherwise."""
        if getattr(self.model, "head_kind", "linear") == "ncm" and self.class_means:
            return nearest_mean_scores(self.model.features(x), self.class_means, self.n_classes)
        return self.model(x)

    def state_dict(self) -> dict[str, Any]:
        return {"seen_classes": list(self.seen_classes), "class_means": dict(self.class_means),
                "class_counts": dict(self.class_counts)}

    def task_state(self) -> dict[str, Any]:
        """What changes while a task trains and ``state_dict`` leaves out (path integrals, moving averages, step
        counters): saved in in-job checkpoints, so a killed task resumes exactly. Everything ``before_task``
        derives from the task-start weights is rebuilt by calling it again."""
        return {}

    def load_task_state(self, state: dict[str, Any]) -> None:
        """Restore ``task_state`` after ``before_task`` and ``load_state_dict`` on resume."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen_classes = list(state.get("seen_classes", []))
        self.class_means = {int(c): stored(m) for c, m in self.on_device(state.get("class_means", {})).items()}
        self.class_counts = {int(c): int(n) for c, n in state.get("class_counts", {}).items()}


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    return x


def stored(values: torch.Tensor) -> torch.Tensor:
    """``values`` as a method keeps them: floating point in fp32 (outputs of a bf16 or fp16 forward included, so a
    buffer filled under one precision can be written under another), other dtypes (uint8 images, labels) as
    they are."""
    return values.float() if values.is_floating_point() and values.dtype != torch.float32 else values


def _merged(cls: type, attribute: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get(attribute, {}))
    return merged


def declared_params(cls: type[Method]) -> dict[str, dict[str, Any]]:
    """Every hyperparameter ``cls`` takes, with its schema fragment: ``PARAMS`` merged from the base classes down."""
    return _merged(cls, "PARAMS")


def declared_facts(cls: type[Method]) -> dict[str, Any]:
    """``FACTS`` merged from the base classes down (a variant inherits its base's facts unless it restates one)."""
    return _merged(cls, "FACTS")


COMMON_DEFAULTS: dict[str, Any] = {key: field["default"] for key, field in Method.PARAMS.items()}
"""Options every method takes (schema: ``$defs/common_method_params``, built from ``Method.PARAMS``)."""

METHODS: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    def wrap(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method '{name}' registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method '{name}'; valid: {', '.join(sorted(METHODS))}") from None
