"""The batches of a task's epoch, as the training loop (``clgrid.train``) draws them: gathered by index on the
device, or fed from host memory by a ``DataLoader``'s workers."""

from __future__ import annotations

import torch

from clgrid.methods.base import TaskData


class BatchStream:
    """(indices, inputs) of each batch of an epoch's order.

    In-memory data (the default) is gathered by index on the device. Host-resident data (``data.loader`` set:
    datasets too large for the device) goes through one ``DataLoader`` per task whose persistent workers gather
    whole batches from host memory into pinned buffers, copied to the device without blocking; the batches and
    their order are the same either way.
    """

    def __init__(self, data: TaskData, batch_size: int):
        self.data, self.batch_size = data, batch_size
        self.device = data.y.device
        self.chunks: list[torch.Tensor] = []
        self.loader = None
        if data.loader is not None:
            from torch.utils.data import DataLoader

            workers = int(data.loader.get("num_workers", 0))
            self.loader = DataLoader(_Gather(data.x), sampler=_Chunks(self), batch_size=None, num_workers=workers,
                                     pin_memory=bool(data.loader.get("pin_memory")),
                                     persistent_workers=workers > 0, prefetch_factor=4 if workers else None)

    def close(self) -> None:
        """Stop the loader's worker processes now. Persistent workers otherwise outlive the task (the stream and
        its sampler refer to each other, so only a garbage collection frees them): a job training several tasks
        would hold 2, 4, 6 … workers, and forked workers inherit the old loaders and fail to shut them down
        ("can only test a child process"). torch has no public call for it: the loader's iterator is asked
        directly, as its own ``__del__`` would (a no-op once done), and the loader is dropped."""
        iterator = getattr(self.loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.loader = None
        self.chunks = []

    def epoch(self, order: torch.Tensor, first: int = 0):
        """(step, indices, inputs) of the epoch's batches from batch ``first`` on (a resumed epoch skips the
        batches it had done without gathering them)."""
        # The whole order moves to the device at once: a copy per batch would wait for the GPU every step.
        indices = order.to(self.device).split(self.batch_size)[first:]
        if self.loader is None:
            for step, idx in enumerate(indices, start=first):
                yield step, idx, self.data.x[idx]
            return
        self.chunks = list(order.split(self.batch_size))[first:]  # what the loader's workers gather on the host
        for step, (idx, x) in enumerate(zip(indices, self.loader), start=first):
            yield step, idx, x.to(self.device, non_blocking=True)


class _Chunks:
    """The sampler of a ``BatchStream``'s loader: the current epoch's index chunks, one per batch."""

    def __init__(self, stream: BatchStream):
        self.stream = stream

    def __iter__(self):
        return iter(self.stream.chunks)

    def __len__(self) -> int:
        return len(self.stream.chunks)


class _Gather:
    """A map-style dataset whose items are whole batches: ``dataset[indices]`` is one vectorised gather."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return self.x[indices]

    def __len__(self) -> int:
        return len(self.x)
