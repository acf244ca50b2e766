"""The training loop's optimizers: ``torch.optim``'s SGD and Adam, stepping all parameters with multi-tensor ops.

Until issue 19 these were hand-written copies of ``torch.optim``'s update rules, kept only because constructing a
``torch.optim`` optimizer imports ``torch._dynamo`` (about 1.8 s per process) and a grid paid that in every job.
The warm worker (``clgrid.worker``, docs/speed.md) now imports it once per grid, so the library's own optimizers
cost nothing there; a job run without the worker (``CLGRID_WORKER=0``, SLURM) pays the import once.
The parameters they produce are bit-identical to the hand-written ones on the CPU (400 steps of the default
MLP, SGD with and without momentum and weight decay, Adam with and without weight decay).

``foreach=True`` on every device, as the hand-written ones did: a few multi-tensor kernels per step instead of a
few small ones per parameter (``torch.optim``'s default only on GPU; on the CPU the numbers are the same either
way). Weight decay is L2, added to the gradient; ``param_groups`` (one group) is what ``torch.amp.GradScaler``
reads to unscale the gradients. The names stay, so callers and checkpoints' code paths do not change.
"""

from __future__ import annotations

import torch


class SGD(torch.optim.SGD):
    """v ← μ·v + (g + λθ);  θ ← θ − lr·v  (v starts at the first gradient)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True)


class Adam(torch.optim.Adam):
    """Adam (Kingma & Ba 2015) with bias correction and L2 weight decay."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=True)
