"""GDumb, Greedy sampler and Dumb learner (Prabhu, Torr & Dokania 2020, ECCV, "GDumb: A Simple
Approach that Questions Our Progress in Continual Learning").

Sampler: a memory of at most ``memory_size`` samples, filled greedily from the
stream with class balance: a sample is stored while the memory is not full;
once it is full, a sample whose class has fewer stored samples than the largest
class replaces a random sample of the largest class (ties: the lowest class
id); otherwise it is dropped. The memory ends as balanced as the stream allows
(class counts differ by at most one among classes with enough samples). It
balances classes, not tasks: in a domain-incremental stream (the same classes
in every task) a full memory admits few later samples and stays mostly task 0.

Learner: before each task the model is reset to the run's initial weights (the
weights at the start of task 0, kept in the method state) and trained from
scratch on the memory only, so ``training_data`` returns the memory after the
new task's samples were offered to it, in a random order.

Default ``memory_size`` 300: the smallest memory of the paper's MNIST
experiments with an MLP (class-incremental, 5 tasks of 2 classes; the authors'
``scripts/replicate.sh``), the setting closest to split digits. The paper's
cutmix, cosine learning-rate schedule and gradient clipping are left out: the
shared loop trains every method the same way.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import torch

from clgrid.methods.base import Method, TaskData, register, stored, take


class GreedyClassBalancedMemory:
    """At most ``size`` (x, y) samples, filled by GDumb's greedy class-balancing sampler; loaded inputs go to
    ``inputs_device`` (where the task's inputs live; None: the labels' device)."""

    def __init__(self, size: int, inputs_device: torch.device | None = None):
        self.size = size
        self.inputs_device = inputs_device
        self.x: torch.Tensor | None = None
        self.y = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def add(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> None:
        """Offer the samples (x[i], y[i]) in order; evictions pick uniformly within the largest class."""
        stored_x = list(self.x) if self.x is not None else []
        stored_y = self.y.tolist()
        members: dict[int, list[int]] = {}  # class -> slots holding it
        for slot, c in enumerate(stored_y):
            members.setdefault(c, []).append(slot)
        for i, c in enumerate(y.tolist()):
            if len(stored_y) < self.size:
                members.setdefault(c, []).append(len(stored_y))
                stored_x.append(x[i])
                stored_y.append(c)
                continue
            largest = max(sorted(members), key=lambda k: len(members[k]))
            if len(members.get(c, [])) >= len(members[largest]):
                continue
            victim = members[largest].pop(int(torch.randint(len(members[largest]), (1,), generator=generator)))
            members.setdefault(c, []).append(victim)
            stored_x[victim] = x[i]
            stored_y[victim] = c
        if stored_x:
            self.x = torch.stack(stored_x)
            self.y = torch.tensor(stored_y, dtype=torch.long, device=y.device)

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "x": self.x, "y": self.y}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Inputs where the task's inputs live (the memory is GDumb's training data), labels on ``device``."""
        self.size = state["size"]
        self.x = None if state["x"] is None else stored(state["x"]).to(self.inputs_device or device)
        self.y = state["y"].to(device)


@register("gdumb")
class GDumb(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "memory_size": {
            "description": ("samples in GDumb's class-balanced memory, the only training data (Prabhu et al. 2020, "
                            "MNIST with an MLP, k = 300)"),
            "type": "integer", "minimum": 1, "default": 300,
        },
    }
    FACTS: dict[str, Any] = {"paper": "Prabhu, Torr & Dokania 2020, ECCV", "buffer_params": ["memory_size"],
                             "state_weights": 1}  # the initial weights it retrains from

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        self.memory = GreedyClassBalancedMemory(int(self.params["memory_size"]), self.inputs_device)
        self.initial_weights: dict[str, torch.Tensor] | None = None

    def _stream_generator(self, task_id: int) -> torch.Generator:
        """The generator for the memory update, which runs before the loop hands one to ``before_task``.

        ``training_data`` receives no generator, so one is derived from the run's
        initial weights (different per seed, fixed within a run) and the task id:
        rerunning a task, or running it after a restart, gives the same memory. Only the head's weights enter
        (random per seed too): a run on cached features (the backbone swapped out) draws the same memory.
        """
        digest = hashlib.sha256(str(task_id).encode())
        for name in sorted(n for n in self.initial_weights if n.startswith("head.")):
            raw = self.initial_weights[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest.update(raw.numpy().tobytes())
        return torch.Generator().manual_seed(int.from_bytes(digest.digest()[:8], "little"))

    def _keep_initial_weights(self) -> None:
        """At task 0 (no state loaded yet) the model holds the run's initial weights: keep a copy."""
        if self.initial_weights is None:
            self.initial_weights = {n: t.detach().clone() for n, t in self.model.state_dict().items()}

    def training_data(self, task: TaskData, load_task: Callable[[int], TaskData]) -> TaskData:
        self._keep_initial_weights()
        generator = self._stream_generator(task.task_id)
        order = torch.randperm(len(task.y), generator=generator).to(task.y.device)
        self.memory.add(take(task.x, order), task.y[order], generator)
        classes = sorted(set(self.memory.y.tolist()))
        return task.with_samples(self.memory.x, self.memory.y, classes)

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        self._keep_initial_weights()
        self.model.load_state_dict(self.initial_weights)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory": self.memory.state_dict(), "initial_weights": self.initial_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory.load_state_dict(state["memory"], self.device)
        self.initial_weights = self.on_device(state["initial_weights"])
