"""Every backbone architecture and its facts, read from the family modules' ``ARCHS`` literals without importing
them (no torch): the planning side (config checks, ``resources``, the schema's arch options) and the torch side
(``clgrid.models.BACKBONES``, which adds the builders) read the same declarations.

A family module (``clgrid/models/*.py``, or a lab's own module registered under the entry point group
``clgrid.backbones``, e.g. ``[project.entry-points."clgrid.backbones"] mylab = "mylab.backbones"``) declares::

    ARCHS = {"<arch>": {
        "build": "<function>",          # build(input_shape, **options) -> (backbone, feature_dim), in the module
        "build_net": "<function>",      # instead of build: build_net(options, class_names, load_weights, dataset)
                                        # makes the whole Net (CLIP: encoder and zero-shot head)
        "build_options": {...},         # fixed keyword arguments of build (resnet18: depth 18)
        "blocks": "<function>" | [...], # the children with weights (freeze first_k, CKA): a function of the
                                        # options, in the module, or the names when the options do not change them
        "defaults": {...},              # every option and its default (the schema fills them for this arch)
        "weights_option": "<option>",   # the option naming pretrained weights (null: random init, seeded)
        "torchvision_weights": "<enum>",# torchvision's weights enum of the arch (weights: imagenet)
        "children_without_weights": [...],  # children with no weights that are still valid CKA layers
        "frozen_when": {"<option>": [values]},  # option values that leave the backbone's weights untrained
        "cpu_seconds_per_sample": 0.03, # one training sample, forward + backward, one core, at 32x32 (resources)
        "cost_scales_with_pixels": True,  # whether that cost grows with the input's pixels (False: fixed size)
        "parameters": 11.2e6,           # order of magnitude, for the memory estimate (resources)
        "lora_default_targets": False,  # whether it has the nn.Linear layers LoRA adapts by default
    }}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from clgrid.catalog.declared import PACKAGE_ROOT, DeclarationError, declarations

HEAD_OPTIONS = ("head", "head_hidden")
"""Options of every arch: the head ``clgrid.models.Net`` puts on the backbone's features."""

COMMON_OPTIONS = (*HEAD_OPTIONS, "init_from")
"""Every option any arch takes: the head's, and ``init_from`` (initial weights from another run's checkpoint)."""

ENTRY_POINT_GROUP = "clgrid.backbones"
FAMILIES_PACKAGE = "clgrid.models"

# Resource estimates of a family that does not declare them: a mid-sized convolutional network.
DEFAULT_CPU_SECONDS_PER_SAMPLE = 3e-2
DEFAULT_PARAMETERS = 25e6


@dataclass(frozen=True)
class Arch:
    """One architecture's declared facts, and the module that declares them (where its builder lives)."""

    name: str
    module: str
    defaults: dict[str, Any]
    blocks: str | tuple[str, ...]
    build: str | None = None
    build_net: str | None = None
    build_options: dict[str, Any] = field(default_factory=dict)
    weights_option: str | None = None
    torchvision_weights: str | None = None
    children_without_weights: tuple[str, ...] = ()
    frozen_when: dict[str, list[Any]] = field(default_factory=dict)
    cpu_seconds_per_sample: float = DEFAULT_CPU_SECONDS_PER_SAMPLE
    cost_scales_with_pixels: bool = True
    parameters: float = DEFAULT_PARAMETERS
    lora_default_targets: bool = False

    def option(self, backbone_cfg: dict[str, Any], name: str) -> Any:
        """An option's value in a backbone config, its default when left out."""
        return backbone_cfg.get(name, self.defaults.get(name))

    def weights(self, backbone_cfg: dict[str, Any]) -> Any:
        """The pretrained weights a config names (a tag, hub name, ``imagenet`` or a path), or None: random init."""
        return self.option(backbone_cfg, self.weights_option) if self.weights_option else None

    def frozen(self, backbone_cfg: dict[str, Any]) -> bool:
        """Whether the config's options leave every backbone weight untrained (CLIP's train_mode fc or text)."""
        return any(self.option(backbone_cfg, name) in values for name, values in self.frozen_when.items())


REQUIRED = ("defaults", "blocks")
OPTIONAL = tuple(name for name in Arch.__dataclass_fields__ if name not in ("name", "module", *REQUIRED))


def _arch(module: str, name: str, facts: Any) -> Arch:
    """The declaration of ``name`` in ``module`` as an ``Arch``; a missing or unknown key is named."""
    where = f"{module}: ARCHS[{name!r}]"
    if not isinstance(facts, dict):
        raise DeclarationError(f"{where} must be a dict of facts, got {type(facts).__name__}")
    missing = [key for key in REQUIRED if key not in facts]
    unknown = sorted(set(facts) - {*REQUIRED, *OPTIONAL})
    if missing or unknown:
        raise DeclarationError(f"{where}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"] if unknown
                                                                     else []))
            + f" (facts: {', '.join([*REQUIRED, *OPTIONAL])})")
    if ("build" in facts) == ("build_net" in facts):
        raise DeclarationError(f"{where} needs exactly one of build (the backbone) and build_net (the whole net)")
    values = dict(facts)
    for key in ("children_without_weights", *(("blocks",) if isinstance(facts["blocks"], list) else ())):
        values[key] = tuple(values.get(key, ()))
    return Arch(name=name, module=module, **values)


def declared_in(module: str) -> list[Arch]:
    """The architectures ``module`` declares in its ``ARCHS`` literal (none when it has no ``ARCHS``)."""
    found = declarations(module, ("ARCHS",))[0].values.get("ARCHS")
    if found is None:
        return []
    if not isinstance(found, dict):
        raise DeclarationError(f"{module}: ARCHS must map arch names to their facts")
    return [_arch(module, name, facts) for name, facts in found.items()]


def family_modules() -> list[str]:
    """clgrid's own family modules (``clgrid/models/*.py`` that declare ``ARCHS``), then the installed packages'
    registered under the entry point group ``clgrid.backbones``."""
    own = sorted(f"{FAMILIES_PACKAGE}.{path.stem}" for path in (PACKAGE_ROOT / "models").glob("*.py")
                 if path.stem != "__init__")
    return own + [point.value for point in entry_points(group=ENTRY_POINT_GROUP)]


@lru_cache(maxsize=1)
def archs() -> dict[str, Arch]:
    """Every architecture by name, clgrid's own first; a name declared twice is refused, naming both modules."""
    found: dict[str, Arch] = {}
    for module in family_modules():
        for arch in declared_in(module):
            if arch.name in found:
                raise DeclarationError(f"arch {arch.name!r} is declared by {found[arch.name].module} and by "
                                       f"{arch.module}; rename one")
            found[arch.name] = arch
    return found


def get(name: str) -> Arch:
    """The architecture called ``name``; an unknown one is named with the valid ones."""
    known = archs()
    if name not in known:
        raise KeyError(f"unknown backbone arch '{name}'; valid: {', '.join(sorted(known))}")
    return known[name]
