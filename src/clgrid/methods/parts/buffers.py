"""Stored training samples that persist across tasks: an equal share per (task, class) group (``BalancedBuffer``),
or reservoir sampling (``ReservoirBuffer``, Vitter 1985). Replay, DER and DER++ keep one.

Stored inputs live where the training inputs live (``inputs_device``); floating-point values are kept in fp32
(``stored``), so a buffer filled under one precision loads under another.
"""

from __future__ import annotations

from typing import Any

import torch

from clgrid.methods.base import TaskData, stored, take


class BalancedBuffer:
    """Up to ``size`` stored (x, y, task) samples, balanced over (task, class) groups.

    Inputs ``x`` stay where the task's inputs live, ``inputs_device`` (host memory for a host-placed dataset; None:
    wherever they come from); labels and task ids on the training device, as the task's labels (``Method``'s
    placement rule).
    """

    def __init__(self, size: int, inputs_device: torch.device | None = None):
        self.size = size
        self.inputs_device = inputs_device
        self.x: torch.Tensor | None = None
        self.y = torch.empty(0, dtype=torch.long)
        self.task = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def add_task(self, data: TaskData, generator: torch.Generator) -> None:
        device = data.y.device  # labels and task ids live on the training device; inputs may not
        # The (task, class) groups, sorted, from torch.unique over whole tensors (no Python loop over samples).
        old_groups = torch.unique(torch.stack([self.task.to(device), self.y.to(device)], 1), dim=0).tolist()
        new_groups = [[data.task_id, c] for c in data.y.unique().tolist()]
        groups = sorted({(t, c) for t, c in old_groups + new_groups})
        quota, extra = divmod(self.size, len(groups))
        keep_x, keep_y, keep_t = [], [], []
        for rank, (t, c) in enumerate(groups):  # one draw per new group, in this order: the generator's stream
            share = quota + (1 if rank < extra else 0)
            if t == data.task_id:
                members = torch.nonzero(data.y == c).flatten().cpu()
                pick = members[torch.randperm(len(members), generator=generator)[:share]].to(device)
                keep_x.append(take(data.x, pick))
                keep_y.append(take(data.y, pick))
                keep_t.append(torch.full((len(pick),), t, dtype=torch.long, device=device))
            else:
                members = torch.nonzero((self.task == t) & (self.y == c)).flatten()[:share]
                keep_x.append(take(self.x, members))
                keep_y.append(self.y[members])
                keep_t.append(self.task[members])
        self.x = torch.cat(keep_x)
        self.y = torch.cat(keep_y)
        self.task = torch.cat(keep_t)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` stored samples drawn uniformly with repeats. The indices are drawn on the generator's device (the
        task's CPU generator: the same draws on every device) and moved to each stored tensor's device once,
        without waiting for the device (``non_blocking``: a pageable host tensor is staged by the driver)."""
        pick = torch.randint(len(self.y), (n,), generator=generator, device=generator.device)
        pick_y = pick.to(self.y.device, non_blocking=True)
        pick_x = pick_y if self.x.device == pick_y.device else pick.to(self.x.device, non_blocking=True)
        return self.x[pick_x], self.y[pick_y]

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "x": self.x, "y": self.y, "task": self.task}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.size = state["size"]
        self.x = None if state["x"] is None else stored(state["x"]).to(self.inputs_device or device)
        self.y = state["y"].to(device)
        self.task = state["task"].to(device)


class ReservoirBuffer:
    """Up to ``size`` samples from a stream, each kept with equal probability (Vitter 1985, Algorithm R).

    A sample is a row of every named field (``x``, ``y``, DER's ``logits``, …).
    The n-th sample of the stream (1-based) takes the next free slot while the
    buffer is not full; afterwards it replaces slot j, j uniform in [0, n), when
    j < size. By induction every one of the n samples seen is then in the buffer
    with probability size / n. ``n_seen`` is the stream length so far; it must
    survive between tasks or later tasks would be over-represented.

    ``devices`` says where a field is kept (``{"x": <where the task's inputs live>}``; any other field stays on
    the device of its first values): rows offered from elsewhere (a training batch on the GPU, a host-placed
    task's samples) are copied there. Floating-point fields are kept in fp32 (``stored``): DER's logits come
    out of a bf16 or fp16 forward, and a buffer must take rows computed under any precision.
    """

    def __init__(self, size: int, devices: dict[str, torch.device] | None = None):
        self.size = size
        self.n_seen = 0
        self.fields: dict[str, torch.Tensor] = {}
        self.devices = dict(devices or {})

    def __len__(self) -> int:
        return len(next(iter(self.fields.values()))) if self.fields else 0

    def add(self, generator: torch.Generator, **rows: torch.Tensor) -> None:
        """Offer ``rows`` (same length for every field) to the buffer, in order, as the next stream samples."""
        m = len(next(iter(rows.values())))
        if m == 0:
            return
        # Draw j_i uniform in [0, n_i) for the whole batch at once; float64 is exact enough for any stream we run.
        stream_positions = torch.arange(self.n_seen + 1, self.n_seen + m + 1, dtype=torch.float64)
        draws = (torch.rand(m, generator=generator, dtype=torch.float64) * stream_positions).long()
        # Algorithm R without a loop over rows: the first ``free`` rows fill the free slots in order; every later
        # row with j < size replaces slot j; where rows share a slot, the last one (the largest row index) stays.
        start = len(self)
        free = min(max(self.size - start, 0), m)
        row_ids = torch.arange(m)
        slot_of_row = torch.where(row_ids < free, start + row_ids, draws)
        lands = (row_ids < free) | (draws < self.size)
        self.n_seen += m
        if not bool(lands.any()):
            return
        writer = torch.full((start + free,), -1, dtype=torch.long)
        writer.scatter_reduce_(0, slot_of_row[lands], row_ids[lands], reduce="amax")
        slots = torch.nonzero(writer >= 0).flatten()
        sources = writer[slots]
        filled = start + free
        for name, values in rows.items():  # each field on its own device (inputs may stay in host memory)
            kept = self.fields.get(name)
            if kept is None:
                kept = torch.empty((0, *values.shape[1:]), dtype=stored(values[:0]).dtype,
                                   device=self.devices.get(name, values.device))
            if filled > len(kept):  # growing: a new tensor; once full, slots are overwritten in place
                kept = torch.cat([kept, kept.new_empty((filled - len(kept), *values.shape[1:]))])
            kept[slots.to(kept.device)] = stored(take(values, sources).detach()).to(kept.device)
            self.fields[name] = kept

    def sample(self, n: int, generator: torch.Generator, replace: bool = True) -> dict[str, torch.Tensor]:
        """``n`` stored samples drawn uniformly (at most ``len(self)`` of them when ``replace`` is False).

        The indices are drawn on the generator's device (the task's CPU generator: the same draws on every device)
        and moved once per device the fields live on, without waiting for it (``non_blocking``).
        """
        if replace:
            pick = torch.randint(len(self), (n,), generator=generator, device=generator.device)
        else:
            pick = torch.randperm(len(self), generator=generator, device=generator.device)[:n]
        picks = {pick.device: pick}
        for values in self.fields.values():
            if values.device not in picks:
                picks[values.device] = pick.to(values.device, non_blocking=True)
        return {name: values[picks[values.device]] for name, values in self.fields.items()}

    def state_dict(self) -> dict[str, Any]:
        # Copies: ``add`` overwrites slots in place, and a state taken earlier must not change under its holder.
        return {"size": self.size, "n_seen": self.n_seen,
                "fields": {name: values.clone() for name, values in self.fields.items()}}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Fields onto ``devices`` (``device``, the model's, for the rest), floating point in fp32."""
        self.size = state["size"]
        self.n_seen = int(state["n_seen"])
        # Copies, for the same reason: the loaded state must not change as this buffer is written.
        self.fields = {name: stored(values).to(self.devices.get(name, device), copy=True)
                       for name, values in state["fields"].items()}
