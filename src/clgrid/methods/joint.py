"""Joint training, the upper bound: at task t train on the union of tasks 0..t.

This is the cumulative variant (Avalanche's ``Cumulative``): it continues from the
previous task's weights, so each job stays one task and the DAG shape is the same
as every other method's.
"""

from __future__ import annotations

from typing import Callable

import torch

from clgrid.methods.base import Method, TaskData, register


@register("joint")
class Joint(Method):
    FACTS: dict[str, Any] = {"paper": None, "trains_on_seen_tasks": True}

    def training_data(self, task: TaskData, load_task: Callable[[int], TaskData]) -> TaskData:
        parts = [load_task(i) for i in range(task.task_id)] + [task]
        classes = sorted({c for part in parts for c in part.classes})
        return task.with_samples(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]), classes)
