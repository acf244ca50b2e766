"""Accuracy of a model on every task's test set: one row of each accuracy matrix."""

from __future__ import annotations

from typing import Callable

import torch


@torch.inference_mode()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             classes: list[int] | None = None, batch: int = 1024) -> tuple[float, float]:
    """(class-IL, task-IL) top-1 accuracy in percent.

    Class-IL: argmax over every class of the head. Task-IL: argmax over ``classes`` only (the evaluated task's
    classes; the other logits are masked to −inf, as Mammoth's ``mask_classes`` does), so the task identity is
    given at test time.
    """
    correct = correct_task = 0
    mask = None
    for start in range(0, len(y), batch):
        scores = predict(x[start : start + batch])
        labels = y[start : start + batch]
        correct += int((scores.argmax(dim=-1) == labels).sum())
        if classes is not None:
            if mask is None:
                mask = torch.full((scores.shape[-1],), float("-inf"), device=scores.device)
                mask[torch.as_tensor(classes, device=scores.device)] = 0.0
            correct_task += int(((scores + mask).argmax(dim=-1) == labels).sum())
    n = max(len(y), 1)
    return 100.0 * correct / n, (100.0 * correct_task / n if classes is not None else 100.0 * correct / n)


def accuracy_row(predict: Callable[[torch.Tensor], torch.Tensor],
                 test_sets: list[tuple[torch.Tensor, torch.Tensor, list[int]]]) -> dict[str, list[float]]:
    """R[t, i] for every task i (seen or not), class-IL and task-IL, given the predictor after task t."""
    rows = [accuracy(predict, x, y, classes) for x, y, classes in test_sets]
    return {"class_il": [r[0] for r in rows], "task_il": [r[1] for r in rows]}
