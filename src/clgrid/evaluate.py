"""Accuracy of a model on every task's test set: one row of the accuracy matrix."""

from __future__ import annotations

from typing import Callable

import torch


@torch.no_grad()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    """Top-1 accuracy in percent; class-incremental: argmax over every class of the head."""
    correct = 0
    for start in range(0, len(y), batch):
        scores = predict(x[start : start + batch])
        correct += int((scores.argmax(dim=-1) == y[start : start + batch]).sum())
    return 100.0 * correct / max(len(y), 1)


def accuracy_row(predict: Callable[[torch.Tensor], torch.Tensor], test_sets: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """R[t, i] for every task i (seen or not), given the predictor after task t."""
    return [accuracy(predict, x, y) for x, y in test_sets]
