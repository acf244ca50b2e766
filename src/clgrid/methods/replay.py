"""Experience replay with a fixed-size buffer that persists across tasks.

Each training batch is the current batch concatenated with a batch drawn
uniformly from the buffer (Chaudhry et al. 2019, "On Tiny Episodic Memories").
Two ways to fill the buffer (``buffer_policy``), both compared in that paper:

- ``class_balanced`` (default): after a task the buffer is refilled so every
  (task, class) group seen so far has an equal share: groups already in the
  buffer keep a prefix of their samples, new groups get a random sample. In
  class-incremental scenarios this is plain class balance; in domain-incremental
  ones every task keeps its share too.
- ``reservoir``: Vitter's (1985) Algorithm R over the stream of training samples,
  so every sample seen so far is in the buffer with probability size / n_seen.
  The loop shows each task's data once per epoch, in a fresh order; counting
  every epoch would weigh a task by its epochs, so each task's samples enter the
  stream exactly once, at ``after_task``, in a random order drawn from the task's
  generator. The buffer then holds only earlier tasks while a task trains, as
  with ``class_balanced``.
- ``reservoir_online``: Experience Replay as the DER paper's code runs it
  (Buzzega et al. 2020; Mammoth ``models/er.py``): each training batch, as it
  was before augmentation, is offered to the reservoir right after its optimizer
  step, so replay starts from the second batch of the first task; the replay
  batch is drawn without repeats (at most the buffer's size), augmented like the
  training batch, and joined to it in one cross-entropy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register, take
from clgrid.methods.parts.buffers import BalancedBuffer, ReservoirBuffer


BUFFER_POLICIES = ("class_balanced", "reservoir", "reservoir_online")


@register("replay")
class Replay(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "buffer_size": {
            "description": "samples kept across all tasks",
            "type": "integer", "minimum": 1, "default": 200,
        },
        "replay_batch_size": {
            "description": "buffer samples added to each batch (null = the batch size)",
            "type": ["integer", "null"], "minimum": 1, "default": None,
        },
        "buffer_policy": {
            "description": ("how the buffer is filled: class_balanced (an equal share per (task, class) group, refilled"
                            " after each task) or reservoir (Vitter's reservoir sampling; each task's samples are "
                            "offered once, in random order, at the end of the task, so every sample seen is kept with "
                            "probability buffer_size / samples seen), or reservoir_online (Experience Replay as in the "
                            "DER paper's code: every training batch is offered to a reservoir after its optimizer step,"
                            " and replay starts within the first task)"),
            "enum": ["class_balanced", "reservoir", "reservoir_online"], "default": "class_balanced",
        },
    }
    FACTS: dict[str, Any] = {
        "paper": "Chaudhry et al. 2019, arXiv (On Tiny Episodic Memories)",
        "buffer_params": ["buffer_size"],
    }

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        policy = self.params["buffer_policy"]
        if policy not in BUFFER_POLICIES:
            raise ValueError(f"unknown buffer_policy '{policy}'; valid: {', '.join(BUFFER_POLICIES)}")
        size = int(self.params["buffer_size"])
        self.replay_buffer = BalancedBuffer(size, self.inputs_device) if policy == "class_balanced" else \
            ReservoirBuffer(size, {"x": self.inputs_device})
        self.online = policy == "reservoir_online"
        self.pending: dict[str, torch.Tensor] | None = None

    def loss(self, x, y, logits):
        if self.online:
            self.pending = {"x": self.batch_inputs(x).detach(), "y": y.detach()}
        if len(self.replay_buffer) == 0:
            return F.cross_entropy(logits, y)
        n = self.params.get("replay_batch_size") or len(y)
        if self.online:
            drawn = self.replay_buffer.sample(n, self.generator, replace=False)
            buf_x, buf_y = drawn["x"], drawn["y"]
        elif isinstance(self.replay_buffer, ReservoirBuffer):
            drawn = self.replay_buffer.sample(n, self.generator)
            buf_x, buf_y = drawn["x"], drawn["y"]
        else:
            buf_x, buf_y = self.replay_buffer.sample(n, self.generator)
        all_logits = torch.cat([logits, self.model(self.augment(self.on_compute(buf_x)))])
        return F.cross_entropy(all_logits, torch.cat([y, buf_y]))

    def after_step(self) -> None:
        if self.pending is not None:
            self.replay_buffer.add(self.generator, **self.pending)
            self.pending = None

    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        if self.online:
            return
        if isinstance(self.replay_buffer, ReservoirBuffer):
            order = torch.randperm(len(task.y), generator=self.generator).to(task.y.device)
            self.replay_buffer.add(self.generator, x=take(task.x, order), y=task.y[order])
        else:
            self.replay_buffer.add_task(task, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "replay_buffer": self.replay_buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.replay_buffer.load_state_dict(state["replay_buffer"], self.device)
