"""Experience replay with a fixed-size, class-balanced buffer that persists across tasks.

Each training batch is the current batch concatenated with a batch drawn
uniformly from the buffer (Chaudhry et al. 2019, "On Tiny Episodic Memories").
After a task the buffer is refilled so every (task, class) group seen so far has
an equal share: groups already in the buffer keep a prefix of their samples, new
groups get a random sample. In class-incremental scenarios this is plain class
balance; in domain-incremental ones every task keeps its share too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register


class BalancedBuffer:
    """Up to ``size`` stored (x, y, task) samples, balanced over (task, class) groups."""

    def __init__(self, size: int):
        self.size = size
        self.x: torch.Tensor | None = None
        self.y = torch.empty(0, dtype=torch.long)
        self.task = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def add_task(self, data: TaskData, generator: torch.Generator) -> None:
        device = data.x.device
        old_keys = [(int(t), int(c)) for t, c in zip(self.task.tolist(), self.y.tolist())]
        new_groups = sorted({(data.task_id, int(c)) for c in data.y.tolist()})
        groups = sorted(set(old_keys) | set(new_groups))
        quota, extra = divmod(self.size, len(groups))
        keep_x, keep_y, keep_t = [], [], []
        for rank, (t, c) in enumerate(groups):
            share = quota + (1 if rank < extra else 0)
            if t == data.task_id:
                members = torch.nonzero(data.y == c).flatten().cpu()
                pick = members[torch.randperm(len(members), generator=generator)[:share]].to(device)
                keep_x.append(data.x[pick])
                keep_y.append(data.y[pick])
                keep_t.append(torch.full((len(pick),), t, dtype=torch.long, device=device))
            else:
                members = torch.nonzero((self.task == t) & (self.y == c)).flatten()[:share]
                keep_x.append(self.x[members])
                keep_y.append(self.y[members])
                keep_t.append(self.task[members])
        self.x = torch.cat(keep_x)
        self.y = torch.cat(keep_y)
        self.task = torch.cat(keep_t)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(len(self.y), (n,), generator=generator).to(self.y.device)
        return self.x[pick], self.y[pick]

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "x": self.x, "y": self.y, "task": self.task}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.size = state["size"]
        self.x = None if state["x"] is None else state["x"].to(device)
        self.y = state["y"].to(device)
        self.task = state["task"].to(device)


@register("replay")
class Replay(Method):
    def __init__(self, model, params, n_classes):
        super().__init__(model, params, n_classes)
        self.replay_buffer = BalancedBuffer(int(params["buffer_size"]))

    def loss(self, x, y, logits):
        if len(self.replay_buffer) == 0:
            return F.cross_entropy(logits, y)
        n = self.params.get("replay_batch_size") or len(y)
        buf_x, buf_y = self.replay_buffer.sample(n, self.generator)
        all_logits = torch.cat([logits, self.model(buf_x)])
        return F.cross_entropy(all_logits, torch.cat([y, buf_y]))

    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        self.replay_buffer.add_task(task, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "replay_buffer": self.replay_buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.replay_buffer.load_state_dict(state["replay_buffer"], next(self.model.parameters()).device)
