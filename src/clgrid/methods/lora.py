"""LoRA: low-rank adapters on frozen layers, merged into the weights after every task (Hu et al. 2022, ICLR).

    h = W₀x + (α/r)·B·A·x,   A ∈ ℝ^{r×in},  B ∈ ℝ^{out×r}        (Hu et al. 2022, eq. 3 and Sec. 4.1)

During a task the base weights W₀ (and biases) of the targeted layers and every
other backbone weight are frozen; only A, B and the head train. B starts at zero,
so the adapted model equals the loaded one at the start of the task.

Continual-learning protocol (sequential LoRA merging): every task gets fresh
adapters; at the end of the task they are merged, W ← W + (α/r)·B·A, and peft's
wrappers are removed, so the job saves and evaluates a plain ``Net`` whose
``state_dict`` has the plain keys and the next task's job loads it like any other.
Nothing adapter-specific survives a task, so the method state is the base one.

Shared variant (``shared: true``): targeted layers of the same kind and shape —
(wrapper type, in_features, out_features, A and B shapes) — share one master A/B
pair; with ``shared_split_qkvo`` a layer named q/k/v/o (or q_proj, k_proj, v_proj,
o_proj, out_proj) gets a master of its own per projection. The shared modules are
the same ``nn.Module`` objects, so ``model.parameters()`` (hence the optimizer)
lists each once, its gradient sums over the layers that use it, and merging adds
the same update (α/r)·B·A to every one of them.

Targets: ``target_modules: null`` adapts every ``nn.Linear`` in the backbone (the
MLP's ``backbone.block1.0``, ``backbone.block2.0``, …) and every ``nn.MultiheadAttention``
as a whole (open_clip's ``attn``: peft's ``lora.MultiheadAttention`` adapts its input and
output projections; an adapter on ``out_proj`` alone would never act and is refused). Otherwise peft's rule: a
list of names each matching a module whose full name equals it or ends in
``.<name>``, or one string, a regular expression that must match the full name.
The head stays fully trainable unless the user targets it (``head``, ``head.0``):
then its base weights are frozen and adapted like the backbone's.

Randomness: peft draws A with ``kaiming_uniform_(a=√5)`` from the global torch RNG;
we redraw it from the same distribution, U(−1/√in, 1/√in), with a CPU generator
seeded from the task's generator, so the init does not depend on the global RNG
and the task's shuffling order stays that of every other method. Adapter dropout
(``lora_dropout > 0``) uses the global RNG, which the job seeds per task.

Defaults: r = 8 and α = 8 are Hu et al. 2022's RoBERTa/DeBERTa GLUE setting
(Table 9: r_q = r_v = 8, α = 8; Sec. 4.1 sets α to the first r tried); dropout 0 is
peft's default (the GLUE table lists no adapter dropout).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from clgrid.methods.base import Method, TaskData, register

ADAPTER = "default"
PROJECTION_NAMES = {"q": "q", "k": "k", "v": "v", "o": "o",
                    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "out_proj": "o"}


def default_targets(model: nn.Module, frozen: list[str] = ()) -> list[str]:
    """Full names of every ``nn.Linear`` and ``nn.MultiheadAttention`` in the backbone outside ``frozen``.

    An attention module (open_clip's ``attn``) is targeted as a whole and its ``out_proj`` is not: torch's
    ``MultiheadAttention.forward`` reads ``out_proj.weight`` without calling the layer, so an adapter on it would
    never act; peft's ``lora.MultiheadAttention`` adapts the input projection and ``out_proj`` itself.
    """
    names: list[str] = []
    attention: list[str] = []
    for name, module in model.backbone.named_modules():
        full = f"backbone.{name}"
        if isinstance(module, nn.MultiheadAttention):
            attention.append(full)
            names.append(full)
        elif isinstance(module, nn.Linear) and not _inside(full, attention):
            names.append(full)
    return [n for n in names if not _inside(n, frozen)]


def silent_adapters(model: nn.Module) -> list[str]:
    """Adapted layers a plain ``nn.MultiheadAttention`` owns (its ``out_proj``): their adapters would never act."""
    silent = []
    for name, _ in adapter_layers(model):
        parent_name = name.rsplit(".", 1)[0] if "." in name else ""
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, nn.MultiheadAttention) and not parent_name.endswith("base_layer"):
            silent.append(name)
    return silent


def _inside(name: str, modules) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def adapter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, peft LoRA layer) pairs, in module order; empty on a plain model."""
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def share_key(name: str, layer: nn.Module, split_qkvo: bool) -> tuple:
    """Layers with equal keys share one A/B pair: same wrapper type and shapes (and projection, when split)."""
    a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
    projection = PROJECTION_NAMES.get(name.rsplit(".", 1)[-1]) if split_qkvo else None
    return (type(layer).__name__, layer.in_features, layer.out_features, tuple(a.shape), tuple(b.shape), projection)


def tie_adapters(model: nn.Module, split_qkvo: bool) -> dict[tuple, str]:
    """Point every layer's lora_A/lora_B at the first layer with the same ``share_key``; returns key → master name."""
    masters: dict[tuple, tuple[str, nn.Module]] = {}
    for name, layer in adapter_layers(model):
        key = share_key(name, layer, split_qkvo)
        if key not in masters:
            masters[key] = (name, layer)
            continue
        master = masters[key][1]
        layer.lora_A[ADAPTER] = master.lora_A[ADAPTER]
        layer.lora_B[ADAPTER] = master.lora_B[ADAPTER]
    return {key: name for key, (name, _) in masters.items()}


@torch.no_grad()
def redraw_lora_a(model: nn.Module, generator: torch.Generator) -> None:
    """A ~ U(−1/√in, 1/√in) (peft's kaiming_uniform_(a=√5)) from ``generator``, once per distinct A."""
    seen: set[int] = set()
    for _, layer in adapter_layers(model):
        weight = layer.lora_A[ADAPTER].weight
        if id(weight) in seen:
            continue
        seen.add(id(weight))
        bound = 1.0 / weight.shape[1] ** 0.5
        draw = torch.empty(weight.shape, dtype=weight.dtype).uniform_(-bound, bound, generator=generator)
        weight.copy_(draw)


@register("lora")
class LoRA(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "rank": {
            "description": "rank r of the adapters B·A (Hu et al. 2022 use 8 on GLUE, Table 9)",
            "type": "integer", "minimum": 1, "default": 8,
        },
        "lora_alpha": {
            "description": "α: the update is scaled by α/r (Hu et al. 2022, Sec. 4.1; α = 8 on GLUE, Table 9)",
            "type": "number", "exclusiveMinimum": 0, "default": 8,
        },
        "lora_dropout": {
            "description": "dropout on the adapter input (peft's default 0)",
            "type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.0,
        },
        "target_modules": {
            "description": ("layers to adapt: null = every nn.Linear of the backbone; a list of names, each matching a "
                            "module whose full name equals it or ends in .name (e.g. [block1.0, block2.0]; add head to "
                            "adapt the head instead of training it fully); or one string, a regular expression matched "
                            "against the full module name"),
            "type": ["array", "string", "null"], "items": {"type": "string"}, "minItems": 1, "default": None,
        },
        "shared": {
            "description": "layers of the same type and shape share one A/B pair (one master per type, in, out)",
            "type": "boolean", "default": False,
        },
        "shared_split_qkvo": {
            "description": ("with shared, layers named q/k/v/o (or q_proj, k_proj, v_proj, o_proj, out_proj) get one "
                            "master per projection"),
            "type": "boolean", "default": False,
        },
    }
    FACTS: dict[str, Any] = {
        "paper": "Hu et al. 2022, ICLR",
        "feature_cache_unsupported": "it adds adapters inside the backbone",
        "trains_when_backbone_frozen": True,
    }

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        self.lora_model = None  # peft's LoraModel while adapters are injected (between before_task and after_task)
        self.requires_grad_before: dict[str, bool] = {}
        self.masters: dict[tuple, str] = {}
        # ``freeze`` promises bit-identical weights; merged adapters would break it, so frozen blocks get none.
        if self.params["target_modules"] is None and not default_targets(model, self.frozen_modules):
            raise ValueError(f"lora with freeze: {self.params['freeze']} leaves no backbone layer to adapt (frozen: "
                             f"{self.frozen_modules}); LoRA already keeps the base weights fixed during a task, so use "
                             "freeze: none, freeze fewer blocks, or name target_modules (e.g. [head])")

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        if self.lora_model is not None:
            raise RuntimeError("LoRA adapters are still injected: after_task was not called for the previous task")
        self.inject()
        seed = int(np.random.SeedSequence([generator.initial_seed(), 0x10AA]).generate_state(1)[0])
        redraw_lora_a(self.model, torch.Generator().manual_seed(seed))

    def inject(self) -> None:
        """Wrap the targeted layers with fresh adapters; freeze the backbone; keep the head as it was."""
        from peft import LoraConfig
        from peft.tuners.lora import LoraModel

        targets = self.params["target_modules"]
        if targets is None:
            targets = default_targets(self.model, self.frozen_modules)
        self.requires_grad_before = {n: p.requires_grad for n, p in self.model.named_parameters()}
        config = LoraConfig(r=int(self.params["rank"]), lora_alpha=self.params["lora_alpha"],
                            lora_dropout=float(self.params["lora_dropout"]), target_modules=targets,
                            bias="none", init_lora_weights=True)
        try:
            self.lora_model = LoraModel(self.model, config, ADAPTER)
        except ValueError as err:
            adaptable = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)
            candidates = [n for n, m in self.model.named_modules() if isinstance(m, adaptable)]
            raise ValueError(f"LoRA cannot adapt target_modules {targets!r}: {err} "
                             f"Layers of this model peft can adapt: {candidates}") from None
        clash = [n for n, _ in adapter_layers(self.model) if _inside(n, self.frozen_modules)]
        silent = silent_adapters(self.model)
        if clash or silent:
            self.lora_model.unload()
            self.lora_model = None
            for name, p in self.model.named_parameters():
                p.requires_grad_(self.requires_grad_before[name])
            if silent:
                raise ValueError(f"target_modules reach {silent}, the out_proj of an nn.MultiheadAttention, whose "
                                 "forward never calls it: the adapter would do nothing. Target the attention module "
                                 "itself (e.g. attn), which peft adapts with its in- and output projections")
            raise ValueError(f"target_modules {clash} lie in frozen modules {self.frozen_modules}: merging their "
                             "adapters would change frozen weights; drop them from target_modules or from freeze")
        if self.params["shared"]:
            self.masters = tie_adapters(self.model, bool(self.params["shared_split_qkvo"]))
        # peft froze every non-adapter weight; give the head back its trainability (not a targeted head layer's base).
        for name, p in self.model.named_parameters():
            if ".lora_" in name:
                continue
            p.requires_grad_(not name.startswith("backbone.") and self.requires_grad_before.get(name, False))

    def after_task(self, task: TaskData) -> None:
        self.merge()
        super().after_task(task)

    def merge(self) -> None:
        """W ← W + (α/r)·B·A in every adapted layer, then drop peft's wrappers: a plain Net again."""
        self.lora_model.merge_and_unload()
        self.lora_model = None
        for name, p in self.model.named_parameters():
            p.requires_grad_(self.requires_grad_before[name])
