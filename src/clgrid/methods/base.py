"""The method interface: the hooks the training loop calls, and the registry of names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TaskData:
    """One task's training (or test) split, already on the training device."""

    task_id: int
    x: torch.Tensor
    y: torch.Tensor
    classes: list[int]


class Method:
    """Naive fine-tuning; every other method overrides a few of these hooks.

    Order per task: ``training_data`` → ``before_task`` → for each batch
    ``loss``, backward, ``after_backward``, optimizer step → ``after_task``.
    ``state_dict`` must hold everything the next task's job needs.
    """

    name = "naive"

    def __init__(self, model: nn.Module, params: dict[str, Any], n_classes: int):
        self.model = model
        self.params = dict(params)
        self.n_classes = n_classes
        self.generator: torch.Generator | None = None
        self.seen_classes: list[int] = []

    def training_data(self, task: TaskData, load_task: Callable[[int], TaskData]) -> TaskData:
        """The data to train on for ``task``; ``load_task(i)`` gives any earlier task's training split."""
        return task

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        self.generator = generator

    def loss(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def after_backward(self) -> None:
        """Edit gradients in place before the optimizer step (gradient-projection methods)."""

    def after_task(self, task: TaskData) -> None:
        self.seen_classes = sorted(set(self.seen_classes) | set(task.classes))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Scores per class used at evaluation; the model's logits unless the method classifies otherwise."""
        return self.model(x)

    def state_dict(self) -> dict[str, Any]:
        return {"seen_classes": list(self.seen_classes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen_classes = list(state.get("seen_classes", []))


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
