"""Every method's name, hyperparameters and facts, read from the method modules' sources without importing torch.

A method is one module: a ``Method`` subclass registered by name (``@register("ewc")``) that declares

- ``PARAMS``: its hyperparameters, each a JSON-schema fragment (description, type, bounds or enum, default);
  the config schema's ``method_params`` block is built from these (``insert_into_schema``), so the schema, the
  config checks, ``clgrid methods`` and the docs read one declaration;
- ``FACTS``: what the planner needs to know about it (keys in ``FACT_KEYS``).

A subclass inherits its bases' declarations (``derpp`` adds ``der_beta`` to ``der``'s), resolved here from the class
bases and the module's imports, as ``clgrid.methods.base.Method`` merges them at run time.

Where methods come from: every module of ``clgrid/methods/`` that registers one (no hand-kept list), and a lab's own
installed package through the entry point group ``clgrid.methods`` (name = the method's config name, value =
``package.module:Class``), e.g. in its ``pyproject.toml``::

    [project.entry-points."clgrid.methods"]
    scaled_naive = "labmethods.scaled:ScaledNaive"
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from clgrid.catalog.declared import PACKAGE_ROOT, DeclarationError, Declared, declarations, module_file

GROUP = "clgrid.methods"
BASE = ("clgrid.methods.base", "Method")
DECLARED = ("PARAMS", "FACTS")

FACT_KEYS = {
    "paper": "the paper the module implements (None: a baseline)",
    "needs_clip": "runs only on CLIP's image-text model (arch: clip)",
    "feature_cache_unsupported": "why its runs never train on cached features although the backbone is frozen",
    "buffer_params": "hyperparameters that count stored training samples (at most the benchmark's training set)",
    "per_class_buffer_params": "hyperparameters that count the training samples it stores per class of each task",
    "reference_params": "hyperparameters that count the reference images it stores (drawn once, kept in its state)",
    "trains_on_seen_tasks": "each task's job trains on every task so far (its cost grows with the task index)",
    "retrieval": "evaluated by nearest-neighbour retrieval as well as classification",
    "trains_when_backbone_frozen": "trains weights of its own, so freeze: all leaves something to train",
    "dataset_params": "hyperparameters that name a dataset the run's training jobs read",
    "state_weights": ("model-sized float32 tensors its task state keeps beside the model (a Fisher, an anchor, a "
                      "teacher): a number, or {'per_task': n} for state that grows by n with each task learned, n a "
                      "number or the name of the hyperparameter that counts them (the preview's disk estimate)"),
}
"""What a method's ``FACTS`` may say, and what each means."""


@dataclass(frozen=True)
class MethodInfo:
    """One registered method as the planner sees it."""

    name: str
    module: str
    cls: str
    params: dict[str, dict[str, Any]]  # its own hyperparameters (not the options every method takes), merged
    facts: dict[str, Any]
    doc: str  # the first paragraph of the class docstring, else of the module's


# --- reading a module's classes and imports ----------------------------------------------------------------


@lru_cache(maxsize=None)
def _tree(module: str) -> ast.Module:
    path = module_file(module)
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _classes(module: str) -> dict[str, ast.ClassDef]:
    return {s.name: s for s in _tree(module).body if isinstance(s, ast.ClassDef)}


def _imported(module: str) -> dict[str, tuple[str, str | None]]:
    """Local name -> (module, name in it) for ``from m import n``; (module, None) for ``import m [as a]``."""
    names: dict[str, tuple[str, str | None]] = {}
    for stmt in _tree(module).body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
            for alias in stmt.names:
                names[alias.asname or alias.name] = (stmt.module, alias.name)
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                names[alias.asname or alias.name.split(".")[0]] = (alias.name if alias.asname else
                                                                     alias.name.split(".")[0], None)
    return names


def registered_names(module: str) -> dict[str, str]:
    """Class name -> method name for each class of ``module`` decorated with ``@register("name")``."""
    found = {}
    for name, node in _classes(module).items():
        for deco in node.decorator_list:
            func = deco.func if isinstance(deco, ast.Call) else None
            called = getattr(func, "id", None) or getattr(func, "attr", None)
            if (called == "register" and deco.args and isinstance(deco.args[0], ast.Constant)
                    and isinstance(deco.args[0].value, str)):
                found[name] = deco.args[0].value
    return found


def _locate(module: str, name: str, depth: int = 0) -> tuple[str, str] | None:
    """Where the class ``name`` used in ``module`` is defined: in it, or through its imports (re-exports too)."""
    if depth > 8:
        return None
    try:
        if name in _classes(module):
            return module, name
        head, _, rest = name.partition(".")
        source = _imported(module).get(head)
    except DeclarationError:
        return None
    if source is None:
        return None
    origin, imported = source
    if imported is None:  # import m; class C(m.Base)
        return _locate(origin, rest, depth + 1) if rest else None
    if rest:  # from pkg import mod; class C(mod.Base)
        return _locate(f"{origin}.{imported}", rest, depth + 1)
    return _locate(origin, imported, depth + 1)


def _declared(module: str, cls: str) -> Declared:
    return next(d for d in declarations(module, DECLARED) if d.cls == cls)


@lru_cache(maxsize=None)
def merged(module: str, cls: str) -> dict[str, dict[str, Any]]:
    """``{"PARAMS": ..., "FACTS": ...}`` of a class: its bases' (the first base winning, as in Python's MRO for
    these single-line hierarchies), then its own."""
    found: dict[str, dict[str, Any]] = {key: {} for key in DECLARED}
    declared = _declared(module, cls)
    for base in reversed(declared.bases):
        where = _locate(module, base)
        if where is not None:
            for key, values in merged(*where).items():
                found[key].update(values)
    for key in DECLARED:
        found[key].update(declared.values.get(key, {}))
    return found


def _doc(module: str, cls: str) -> str:
    text = ast.get_docstring(_classes(module)[cls]) or ast.get_docstring(_tree(module)) or ""
    return " ".join(text.strip().split("\n\n")[0].split())


# --- the catalog ---------------------------------------------------------------------------------------------


def clgrid_method_modules() -> list[str]:
    """clgrid's own modules that register a method: every ``clgrid/methods/*.py`` with an ``@register``."""
    modules = (f"clgrid.methods.{path.stem}" for path in sorted((PACKAGE_ROOT / "methods").glob("*.py")))
    return [m for m in modules if registered_names(m)]


def external_entries() -> list[tuple[str, str, str]]:
    """(method name, module, class) of each installed package's ``clgrid.methods`` entry point."""
    found = []
    for ep in entry_points(group=GROUP):
        module, _, cls = ep.value.partition(":")
        if not cls:
            raise DeclarationError(f"entry point {ep.name} = {ep.value!r} of group {GROUP} must name a class "
                                   "(package.module:Class)")
        found.append((ep.name, module.strip(), cls.strip()))
    return found


def _info(name: str, module: str, cls: str, common: dict[str, Any]) -> MethodInfo:
    if cls not in _classes(module):
        raise DeclarationError(f"method {name!r}: module {module} has no class {cls}")
    declared = merged(module, cls)
    unknown = sorted(set(declared["FACTS"]) - set(FACT_KEYS))
    if unknown:
        raise DeclarationError(f"method {name!r} ({module}.{cls}) declares unknown FACTS {unknown}; known: "
                               f"{sorted(FACT_KEYS)}")
    params = {k: v for k, v in declared["PARAMS"].items() if k not in common}
    return MethodInfo(name, module, cls, params, declared["FACTS"], _doc(module, cls))


@lru_cache(maxsize=1)
def catalog() -> dict[str, MethodInfo]:
    """Method name -> its info, clgrid's then the entry points', sorted by name. A name taken twice is refused."""
    common = common_params()
    found: dict[str, MethodInfo] = {}
    entries = [(name, module, cls) for module in clgrid_method_modules()
               for cls, name in registered_names(module).items()]
    for name, module, cls in entries + external_entries():
        if name in found:
            raise DeclarationError(f"method {name!r} is declared twice: {found[name].module}.{found[name].cls} and "
                                   f"{module}.{cls}")
        found[name] = _info(name, module, cls, common)
    return dict(sorted(found.items()))


def common_params() -> dict[str, dict[str, Any]]:
    """The options every method takes (``Method.PARAMS``: freeze, freeze_k, lr_scale)."""
    return _declared(*BASE).values["PARAMS"]


def names() -> list[str]:
    return list(catalog())


def info(name: str) -> MethodInfo:
    return catalog()[name]


def fact(name: str, key: str, default: Any = None) -> Any:
    """A method's fact (``FACT_KEYS``), ``default`` where it does not declare it (or is not a known method)."""
    method = catalog().get(name)
    return default if method is None else method.facts.get(key, default)


def with_fact(key: str) -> list[str]:
    """The methods whose fact ``key`` is set (true, or a non-empty value)."""
    return [name for name, method in catalog().items() if method.facts.get(key)]


def modules() -> list[str]:
    """The modules to import so every method registers (the torch side: ``clgrid.methods``)."""
    return list(dict.fromkeys(method.module for method in catalog().values()))


def entry_point_classes() -> dict[str, tuple[str, str]]:
    """Method name -> (module, class) of methods from entry points (registered under the entry point's name)."""
    return {name: (module, cls) for name, module, cls in external_entries()}


# --- the schema's method_params block ------------------------------------------------------------------------


def schema_block(name: str) -> dict[str, Any]:
    """The method's block under ``method_params``: the options every method takes, plus its own ``PARAMS``."""
    block: dict[str, Any] = {"type": "object", "$ref": "#/$defs/common_method_params",
                             "unevaluatedProperties": False, "default": {}}
    params = info(name).params
    if params:
        block["properties"] = copy.deepcopy(params)
    return block


def insert_into_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Fill the schema's method parts from the declarations: ``method_params`` (one block per method),
    ``$defs/common_method_params``, the variants' ``method`` enum and the names in ``methods``' description."""
    listed = names()
    props = schema["properties"]
    props["method_params"] = {
        "description": "hyperparameters per method (names follow each method's paper)",
        "type": "object", "default": {}, "additionalProperties": False,
        "properties": {name: schema_block(name) for name in listed},
    }
    schema.setdefault("$defs", {})["common_method_params"] = {
        "description": "options every method takes", "type": "object", "properties": copy.deepcopy(common_params())}
    props["variants"]["additionalProperties"]["properties"]["method"] = {"enum": listed}
    props["methods"]["description"] = (f"runs to make on every benchmark and backbone: registered CL methods "
                                       f"({', '.join(listed)}) or variants defined under variants")
    return schema


def module_path(name: str) -> Path:
    """The source file of a method (for the docs and error messages)."""
    return module_file(info(name).module)
