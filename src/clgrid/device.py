"""How a job computes on its device: which device, its kernel choices (determinism), the precision (autocast, fp16
loss scaling), the memory layout (channels-last), ``torch.compile`` of the forward, and ``StepRunner``, which
applies them to each step of the training loop (``clgrid.train``)."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable

import torch

from clgrid.methods.base import Method


def resolve_device(device: str) -> torch.device:
    """``auto`` picks the first CUDA GPU when one is present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' was asked for but torch sees no CUDA GPU; use device: auto or cpu")
    return torch.device(device)


def configure_device(device: torch.device, train_cfg: dict[str, Any]) -> None:
    """Process-wide kernel choices of a job on ``device``; call once, before the first CUDA work.

    CUDA: cuDNN autotunes its convolution algorithms for the job's shapes (``cudnn.benchmark``: fastest, but two
    runs may pick different algorithms and differ in the last bits), unless ``train.deterministic: true`` asks
    for deterministic kernels (``torch.use_deterministic_algorithms``), so a GPU run repeats bit for bit. An op
    with no deterministic kernel then raises (not a warning that lets it through): ``fit_task`` names it in a
    ``NondeterministicOp`` error, so ``deterministic: true`` either holds or says which op broke it. CPU kernels
    are deterministic at a fixed thread count already: nothing to set, and the deterministic flag (which imports
    ``torch._inductor``, about 1.9 s) is not paid for.
    """
    if device.type != "cuda":
        return
    deterministic = bool(train_cfg.get("deterministic", False))
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace; read when cuBLAS starts, hence before any CUDA work.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(setting: str, device: torch.device) -> str:
    """``train.precision`` on ``device``: ``auto`` is bf16 on a CUDA GPU with native bf16 (Ampere and later), fp16
    on older CUDA GPUs and fp32 elsewhere (the CPU: no autocast, so CPU results stay as they were)."""
    if setting not in PRECISIONS:
        raise ValueError(f"unknown train.precision '{setting}'; valid: {', '.join(PRECISIONS)}")
    if setting != "auto":
        return setting
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


class NondeterministicOp(RuntimeError):
    """``train.deterministic: true`` met an op that has no deterministic kernel on the device."""

    PATTERN = "does not have a deterministic implementation"

    @classmethod
    def from_torch(cls, err: RuntimeError, task: int, method: str) -> "NondeterministicOp":
        op = str(err).split(cls.PATTERN)[0].strip() or "an operation"
        return cls(f"train.deterministic is true, but {op} has no deterministic implementation on this device "
                   f"(task {task}, method '{method}'), so the run would not repeat bit for bit. Set "
                   "train.deterministic: false for this benchmark (results then repeat up to the last bits), or use "
                   f"a backbone or method without that op. torch said: {str(err).splitlines()[0]}")


class Precision:
    """The arithmetic of a job on a device: the autocast dtype (None: fp32, no autocast) and, for fp16, loss scaling.

    ``autocast()`` is the context the forward pass and loss run in (training and evaluation). fp16 gradients
    underflow without loss scaling, so fp16 training goes through a ``torch.amp.GradScaler``: the loss is scaled
    before backward, the gradients unscaled before the method's ``after_backward`` hook sees them, and a batch
    whose gradients hold inf or NaN is skipped (the scale then halves; ``StepRunner.backward``). bf16 has fp32's
    range and needs none.
    """

    DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, device: torch.device, setting: str = "auto"):
        self.device_type = device.type
        self.name = resolve_precision(setting, device)
        self.dtype = self.DTYPES[self.name]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self):
        """A fresh ``torch.amp.GradScaler`` for fp16 training, else None."""
        if self.name != "fp16":
            return None
        from torch.amp import GradScaler

        return GradScaler(self.device_type)


def uses_channels_last(setting: Any, device: torch.device, model: torch.nn.Module) -> bool:
    """``train.channels_last``: ``auto`` is on for a convolutional network (two or more Conv2d layers: cnn,
    resnet; not a ViT's single patch projection) on CUDA, where channels-last convolutions run on tensor cores."""
    if setting in (True, False):
        return setting
    if setting != "auto":
        raise ValueError(f"train.channels_last must be auto, true or false, got {setting!r}")
    return device.type == "cuda" and sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) >= 2


_COMPILED_FORWARDS: dict[Callable, Callable] = {}
"""``torch.compile`` of each method class's ``forward`` function, made once per process (``compiled_forward``)."""


def compiled_forward(method: Method) -> Callable[[torch.Tensor], torch.Tensor]:
    """``method.forward`` through one ``torch.compile`` per process of its class's ``forward`` function.

    A job that trains several tasks (``jobs.train_tasks``) builds a new model and method per task. Dynamo caches
    compiled code on the function's code object and guards on the types of ``self`` and its modules, not on
    the objects (their parameters are graph inputs), so a second task of the same architecture and method
    reuses the first task's graphs (torch 2.14: one frame compiled for three tasks). A cache entry also holds the
    backend of the ``torch.compile`` call that made it; calling ``torch.compile`` once here, instead of once per
    task, gives every task the same backend object, so the reuse does not depend on two backends comparing
    equal (a backend that does not compiles again each task, until ``recompile_limit``, 8, sends the rest of
    the process to eager).
    """
    function = getattr(method.forward, "__func__", None)
    if function is None or method.forward.__self__ is not method:  # a callable set on the instance: as it is
        return torch.compile(method.forward)
    compiled = _COMPILED_FORWARDS.get(function)
    if compiled is None:
        compiled = _COMPILED_FORWARDS[function] = torch.compile(function)
    return functools.partial(compiled, method)


class StepRunner:
    """How one training step computes on the task's device: precision (autocast, fp16 loss scaling), memory layout
    (channels-last) and ``torch.compile`` of the forward, set from ``train_cfg``. The loop keeps the order of the
    method's hooks; this object only says how each part runs. On the CPU with the defaults it adds nothing: the
    step is the plain fp32 one.
    """

    def __init__(self, model: torch.nn.Module, method: Method, device: torch.device, train_cfg: dict[str, Any]):
        self.model, self.method = model, method
        self.precision = Precision(device, train_cfg.get("precision", "auto"))
        self.own = method.own_step_parameters()  # stepped by the method, but scaled and skipped like the optimizer's
        # Each trainable tensor's dtype before the first forward: autocast must leave it as it is.
        self.dtypes = {id(p): p.dtype for p in [*model.parameters(), *method.extra_parameters(), *self.own]}
        self.checked_dtypes = False
        self.scaler = self.precision.grad_scaler()
        self.clip = train_cfg.get("clip_grad_value")
        self.channels_last = uses_channels_last(train_cfg.get("channels_last", "auto"), device, model)
        self.forward = method.forward
        if train_cfg.get("compile", False):
            # The loop's forward only: the model object stays as it is (state_dict keys, deep copies for teachers).
            self.forward = compiled_forward(method)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The method's loss of a batch: forward and loss under the precision's autocast."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.precision.autocast():
            return self.method.loss(x, y, self.forward(x))

    def backward(self, loss: torch.Tensor, optimizer) -> bool:
        """Gradients of ``loss``, as the method's hooks expect them (under fp16: scaled for backward, then unscaled).

        False when an fp16 gradient overflowed (inf or NaN at the current loss scale): the loop then skips the
        step and the hooks around it, as if the batch had not been drawn (SI's path integral, A-GEM's projection
        would turn the inf into NaN), and the scale halves for the next batch. Always True in fp32 and bf16.
        """
        optimizer.zero_grad(set_to_none=True)
        for p in self.own:
            p.grad = None
        if self.scaler is None:
            loss.backward()
            self._check_dtypes(optimizer)
            return True
        self.scaler.scale(loss).backward()
        self._check_dtypes(optimizer)
        self.scaler.unscale_(optimizer)  # after_backward and clipping see true gradients
        own_grads = [p.grad for p in self.own if p.grad is not None]
        if own_grads:  # the scaler unscales only the optimizer's tensors: the method's own get the same factor
            torch._foreach_mul_(own_grads, 1.0 / self.scaler.get_scale())
        grads = [p.grad for p in optimizer.param_groups[0]["params"] if p.grad is not None] + own_grads
        if grads and not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
            self.scaler.update()
            for p in self.own:
                p.grad = None
            return False
        return True

    def _check_dtypes(self, optimizer) -> None:
        """Once per task, after the first backward: every trainable tensor has the dtype it had before the first
        forward (fp32 in a job). Autocast computes in bf16/fp16 but must never change a parameter's dtype; a
        library that casts its weights to its inputs' dtype (a loss with learnable proxies fed bf16 embeddings)
        would leave them there for good, and the optimizer (or the GradScaler) would then fail with an error that
        names no parameter."""
        if self.checked_dtypes:
            return
        self.checked_dtypes = True
        names = {id(p): n for n, p in self.model.named_parameters()}
        tensors = [p for group in optimizer.param_groups for p in group["params"]] + list(self.own)
        wrong = [f"{names.get(id(p), f'a tensor of method {self.method.name!r}')} ({self.dtypes[id(p)]} -> "
                 f"{p.dtype})" for p in tensors if id(p) in self.dtypes and p.dtype != self.dtypes[id(p)]]
        if wrong:
            raise TypeError(f"trainable tensors changed dtype under precision {self.precision.name}: "
                            f"{', '.join(wrong)}. Compute with such tensors outside autocast (in fp32); see "
                            "clgrid.methods.base.Method")

    def step(self, optimizer, trainable: list[torch.Tensor]) -> None:
        """Clip (``clip_grad_value``) and take the optimizer step."""
        if self.clip is not None:
            torch.nn.utils.clip_grad_value_(trainable, self.clip)
        optimizer.step()
        if self.scaler is not None:
            self.scaler.update()  # the scale grows again after enough finite steps

    def finish(self) -> None:
        """Back to the usual layout, so checkpoints and evaluation see plain contiguous weights."""
        if self.channels_last:
            self.model.to(memory_format=torch.contiguous_format)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else {"grad_scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
