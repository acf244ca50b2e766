"""SGD and Adam with ``torch.optim``'s update rules, without its start-up cost.

Why not ``torch.optim``: its ``step`` imports ``torch._dynamo`` on first use, which
costs about 1.8 s per process here (measured in ``benchmarks/job_overhead.py``).
A grid runs one process per (run, task), so that import alone would be a third of
the default grid's wall time. The updates below follow ``torch.optim.SGD`` and
``torch.optim.Adam`` (non-fused, L2 weight decay added to the gradient), and
``tests/test_optim.py`` checks them step for step against the library (bit for bit on the CPU).

Each step updates all parameters with ``torch._foreach_*`` ops, as ``torch.optim``'s default on GPU: a few
multi-tensor kernels per step instead of a few small ones per parameter. On the CPU these run the same
per-tensor kernels as the loop they replace, so the numbers are the same. ``param_groups`` (one group) is
what ``torch.amp.GradScaler`` reads to unscale the gradients.
"""

from __future__ import annotations

import torch


class SGD:
    """v ← μ·v + (g + λθ);  θ ← θ − lr·v  (v starts at the first gradient, as in torch.optim.SGD)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = [p for p in params]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity: list[torch.Tensor | None] = [None] * len(self.params)

    @property
    def param_groups(self) -> list[dict]:
        return [{"params": self.params}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        """The momentum buffers (None before a parameter's first step): what a resumed task needs."""
        return {"velocity": [None if v is None else v.detach().clone() for v in self.velocity]}

    def load_state_dict(self, state: dict) -> None:
        self.velocity = [None if v is None else v.to(p.device) for v, p in zip(state["velocity"], self.params)]

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            moving = [k for k, i in enumerate(live) if self.velocity[i] is not None]
            if moving:
                buffers = [self.velocity[live[k]] for k in moving]
                torch._foreach_mul_(buffers, self.momentum)
                torch._foreach_add_(buffers, [grads[k] for k in moving])
            for k, i in enumerate(live):
                if self.velocity[i] is None:
                    self.velocity[i] = grads[k].detach().clone()
            grads = [self.velocity[i] for i in live]
        torch._foreach_add_(params, grads, alpha=-self.lr)


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction and L2 weight decay, as torch.optim.Adam."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = [p for p in params]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    @property
    def param_groups(self) -> list[dict]:
        return [{"params": self.params}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"steps": self.steps, "exp_avg": [m.detach().clone() for m in self.exp_avg],
                "exp_avg_sq": [v.detach().clone() for v in self.exp_avg_sq]}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.exp_avg = [m.to(p.device) for m, p in zip(state["exp_avg"], self.params)]
        self.exp_avg_sq = [v.to(p.device) for v, p in zip(state["exp_avg_sq"], self.params)]

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        bias1 = 1 - beta1**self.steps
        bias2_sqrt = (1 - beta2**self.steps) ** 0.5
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        exp_avg = [self.exp_avg[i] for i in live]
        exp_avg_sq = [self.exp_avg_sq[i] for i in live]
        grads = [p.grad for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, value=-self.lr / bias1)
