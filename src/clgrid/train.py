"""The one training loop. Methods change it only through the hooks of ``clgrid.methods.Method``."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from typing import Any, Callable

import numpy as np
import torch

from clgrid.methods.base import Method, TaskData
from clgrid.optim import SGD, Adam

log = logging.getLogger("clgrid.train")


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


def task_generator(seed: int, task_id: int) -> torch.Generator:
    """A CPU generator for shuffling and sampling, independent per (seed, task) so any task can be rerun alone."""
    derived = int(np.random.SeedSequence([seed, task_id]).generate_state(1)[0])
    return torch.Generator().manual_seed(derived)


def make_optimizer(params: list[torch.nn.Parameter], train_cfg: dict[str, Any]) -> SGD | Adam:
    """A fresh optimizer per task (state is not carried across tasks)."""
    name = train_cfg["optimizer"]
    if name == "sgd":
        return SGD(params, lr=train_cfg["lr"], momentum=train_cfg["momentum"], weight_decay=train_cfg["weight_decay"])
    if name == "adam":
        return Adam(params, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    raise ValueError(f"unknown optimizer '{name}'; valid: adam, sgd")


class TrainingDiverged(FloatingPointError):
    """A non-finite loss: training of the task stopped before the step that would have used it.

    ``record()`` is what a run recorded as diverged (``train.on_divergence: record``) keeps in its files.
    """

    def __init__(self, task: int, epoch: int, n_epochs: int, batch: int, steps_per_epoch: int, step: int,
                 loss: float, lr: float, base_lr: float, lr_scale: float, method: str, epoch_losses: list[float]):
        self.task, self.epoch, self.batch, self.step, self.loss, self.lr = task, epoch, batch, step, loss, lr
        self.method, self.epoch_losses = method, epoch_losses
        scaled = f" (train.lr {base_lr:g} x the method's lr_scale {lr_scale:g})" if lr_scale != 1 else ""
        self.summary = (f"training diverged: the loss is {loss} at task {task}, step {step} of the task (epoch "
                        f"{epoch}/{n_epochs}, batch {batch}/{steps_per_epoch}), method '{method}', learning rate "
                        f"{lr:g}{scaled}")
        super().__init__(
            f"{self.summary}. Lower train.lr or the method's regularisation weight, or bound the steps with "
            "train.clip_grad_value; to keep the run as diverged and go on with the rest of the grid, set "
            "train.on_divergence: record"
        )

    def record(self) -> dict[str, Any]:
        """Where and how the run diverged, in plain JSON (the loss as a string: JSON has no NaN)."""
        return {"task": self.task, "step": self.step, "epoch": self.epoch, "batch": self.batch,
                "loss": str(self.loss), "lr": self.lr, "method": self.method}


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


def fit_task(
    model: torch.nn.Module,
    method: Method,
    data: TaskData,
    train_cfg: dict[str, Any],
    generator: torch.Generator,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every_s: float | None = None,
    resume: dict[str, Any] | None = None,
) -> list[float]:
    """Train ``model`` on one task's data for ``epochs`` epochs (or ``iterations`` optimizer steps, the last epoch
    cut short where they end); returns the mean loss of each epoch.

    ``data.x`` is the task's inputs on the training device (uint8 images or floats); batches are taken by
    index and, when ``augment`` is given, augmented on the device. The method sees the augmented batch; the
    batch before augmentation goes to ``method.unaugmented_batch`` (what replay buffers store); the method got the
    same ``augment`` at construction (to augment what it replays).

    How a step computes on the device (``StepRunner``): ``train_cfg``'s ``precision`` (autocast; fp16 with loss
    scaling), ``channels_last`` and ``compile``; on the CPU with their defaults, the plain fp32 step.

    Preemption: when a task has run ``checkpoint_every_s`` seconds since the last in-job checkpoint,
    ``checkpoint`` gets everything needed to continue after the current step (weights, optimizer, method state
    and its in-task state, the generator, the epoch's order and position, the losses so far). Called again with
    that payload as ``resume`` (after the same ``training_data`` and a fresh ``before_task``), the task continues
    from that step and ends exactly as an uninterrupted run.

    A non-finite loss raises ``TrainingDiverged`` (a ``FloatingPointError``) naming the step, the learning rate
    and the method; the model keeps the weights of the last step taken.
    """
    method.before_task(data, generator)
    trainable = [p for p in model.parameters() if p.requires_grad] + method.extra_parameters()
    if not data.trains:
        trainable = []  # an index-only task (e.g. metric learning adding classes without training)
    elif not trainable:
        raise ValueError(f"nothing to train at task {data.task_id}: every parameter is frozen (freeze: all with a "
                         "head that has no weights?)")
    device = data.y.device
    runner = StepRunner(model, method, device, train_cfg)  # first: the optimizer's state takes the weights' layout
    # Methods differ in the step size they tolerate (LoRA's B·A product, stiff penalties): a per-method factor.
    optimizer = make_optimizer(trainable, {**train_cfg, "lr": train_cfg["lr"] * method.params["lr_scale"]}) \
        if trainable else None
    batch_size = int(train_cfg["batch_size"])
    n = len(data.y)
    stream = BatchStream(data, batch_size)
    epoch_losses: list[float] = []
    first_epoch, skip, total, batches, order = 0, 0, 0.0, 0, None
    if resume is not None:
        model.load_state_dict(resume["model"])
        if optimizer is not None:
            optimizer.load_state_dict(resume["optimizer"])
        method.load_state_dict(resume["method"])
        method.load_task_state(resume["task_state"])
        runner.load_state_dict(resume.get("runner", {}))
        generator.set_state(resume["generator"])
        first_epoch, skip, order = resume["epoch"], resume["batches_done"], resume["order"]
        epoch_losses, total, batches = list(resume["epoch_losses"]), resume["loss_total"], resume["batches_done"]
        log.info("task %d resumed at epoch %d, batch %d", data.task_id, first_epoch + 1, skip)
    # The epoch's loss is summed on the device (a float() per step would wait for the GPU); float64, as the sum
    # of Python floats it replaces, so the recorded losses are the same numbers.
    loss_total = torch.tensor(total, dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    last_checkpoint = time.monotonic()
    method.train_mode()
    steps_per_epoch = -(-n // batch_size)
    iterations = train_cfg.get("iterations")
    n_epochs = -(-int(iterations) // steps_per_epoch) if iterations else int(train_cfg["epochs"])
    if not trainable:
        n_epochs = 0
    try:
        for epoch in range(first_epoch, n_epochs):
            if order is None:
                order = data.order(generator)
                loss_total.zero_()
                batches = 0
            for step, idx, x in stream.epoch(order, first=skip):
                if iterations and epoch * steps_per_epoch + step >= iterations:
                    break
                y = data.y[idx]
                if augment is not None:
                    method.unaugmented_batch(x)
                    x = augment(x)
                loss = runner.loss(x, y)
                if not torch.isfinite(loss.detach()):  # the one wait for the device per step: no step on a NaN
                    raise TrainingDiverged(
                        data.task_id, epoch + 1, n_epochs, step + 1, steps_per_epoch,
                        epoch * steps_per_epoch + step + 1, loss.item(), train_cfg["lr"] * method.params["lr_scale"],
                        train_cfg["lr"], method.params["lr_scale"], method.name, list(epoch_losses))
                if runner.backward(loss, optimizer):  # False: fp16 gradients overflowed, no step on this batch
                    method.after_backward()
                    runner.step(optimizer, trainable)
                    method.after_step()
                loss_total += loss.detach()
                batches += 1
                if augment is not None:
                    method.unaugmented_batch(None)
                if checkpoint is not None and checkpoint_every_s is not None and \
                        time.monotonic() - last_checkpoint >= checkpoint_every_s:
                    checkpoint({"epoch": epoch, "batches_done": batches, "order": order,
                                "loss_total": loss_total.item(), "epoch_losses": list(epoch_losses),
                                "generator": generator.get_state(), "model": model.state_dict(),
                                "optimizer": optimizer.state_dict(), "method": method.state_dict(),
                                "task_state": method.task_state(), "runner": runner.state_dict()})
                    last_checkpoint = time.monotonic()
            skip, order = 0, None
            epoch_losses.append(loss_total.item() / max(batches, 1))
            log.info("task %d epoch %d/%d loss %.4f", data.task_id, epoch + 1, n_epochs, epoch_losses[-1])
    except RuntimeError as err:
        if NondeterministicOp.PATTERN in str(err):
            raise NondeterministicOp.from_torch(err, data.task_id, method.name) from err
        raise
    finally:
        stream.close()  # the loader's workers end with the task, not with the job
        runner.finish()
    model.eval()
    method.after_task(data)
    return epoch_losses
