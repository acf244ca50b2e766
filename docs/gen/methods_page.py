"""The methods page, generated from the registered methods, so that each method is described where it is coded.

All reading of the methods goes through `method_rows()`: today it reads the registry (`clgrid.methods.METHODS`:
each class's defaults and docstrings, as `clgrid methods` prints them) and the ranges and one-line docs of the
schema's `method_params.<name>` block. Once the methods declare their hyperparameters in a torch-free catalog,
`method_rows()` is the one function to point at it; the rendering below does not change.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schema_md import cell, literal, range_text, resolve, type_text

COMMON_REF = "#/$defs/common_method_params"
"""The options every method takes: documented once at the top of the page, not under each method."""


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    default: Any
    kind: str  # the value's type as the schema states it, e.g. "integer or null"
    allowed: str  # bounds and choices, empty when any value of the type is allowed
    doc: str  # one line


@dataclass(frozen=True)
class MethodRow:
    name: str
    code: str  # the class, e.g. clgrid.methods.ewc.OnlineEWC
    paper: str  # the module docstring's first paragraph: the paper it implements (STYLE: a method module opens with it)
    summary: str  # the class docstring's first paragraph, or the module's when the class has none
    needs_clip: bool
    hyperparameters: tuple[Hyperparameter, ...]


def first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def method_rows(schema: dict[str, Any]) -> list[MethodRow]:
    """Every registered method, sorted by name, with what the page shows of it. The one place methods are read."""
    from clgrid.methods import METHODS

    blocks = schema["properties"]["method_params"]["properties"]
    rows = []
    for name, cls in sorted(METHODS.items()):
        paper = first_paragraph(inspect.getmodule(cls).__doc__)
        summary = first_paragraph(cls.__dict__.get("__doc__")) or paper
        documented = _documented_keys(blocks.get(name, {}), schema)
        names = list(cls.defaults) + [key for key in documented if key not in cls.defaults]
        hyperparameters = tuple(_hyperparameter(key, cls.defaults, documented.get(key, {})) for key in names)
        rows.append(MethodRow(name, f"{cls.__module__}.{cls.__qualname__}", paper, summary,
                              bool(getattr(cls, "needs_clip", False)), hyperparameters))
    return rows


def _hyperparameter(name: str, defaults: dict[str, Any], node: dict[str, Any]) -> Hyperparameter:
    """One hyperparameter: its default from the class, its type, range and doc from the schema's block."""
    default = defaults[name] if name in defaults else node.get("default")
    return Hyperparameter(name, default, type_text(node), range_text(node), first_paragraph(node.get("description")))


def _documented_keys(block: dict[str, Any], schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A method's keys in the schema: its own and those of shared blocks it uses (kd_params), not the common ones."""
    parts = [block, *block.get("allOf", [])]
    keys: dict[str, dict[str, Any]] = {}
    for part in parts:
        if part.get("$ref") not in (None, COMMON_REF):
            keys.update(resolve({"$ref": part["$ref"]}, schema).get("properties", {}))
        keys.update(part.get("properties", {}))
    return keys


def common_options(schema: dict[str, Any]) -> list[str]:
    """The table of options every method takes, from the schema's common block."""
    lines = ["| option | default | type | allowed | what it sets |", "|---|---|---|---|---|"]
    for key, node in schema["$defs"]["common_method_params"]["properties"].items():
        lines.append(f"| `{key}` | {literal(node.get('default'))} | {type_text(node)} | {range_text(node)} "
                     f"| {cell(node.get('description', ''))} |")
    return lines


def render_method(row: MethodRow) -> list[str]:
    module, cls = row.code.rsplit(".", 1)
    lines = [f"## `{row.name}` {{ #{row.name} }}", "", f"*Module `{module}`:* {cell(row.paper)}", ""]
    if row.summary != row.paper:  # the class's own docstring, e.g. a variant sharing its module with the original
        lines += [f"*Class `{cls}`:* {cell(row.summary)}", ""]
    if row.needs_clip:
        lines += ["Needs a CLIP backbone (`arch: clip`).", ""]
    if not row.hyperparameters:
        return lines + ["No hyperparameters of its own (the options every method takes apply).", ""]
    lines += [f"Under `method_params.{row.name}`:", "",
              "| hyperparameter | default | type | allowed | what it sets |", "|---|---|---|---|---|"]
    for hp in row.hyperparameters:
        lines.append(f"| `{hp.name}` | {literal(hp.default)} | {hp.kind} | {hp.allowed} | {cell(hp.doc)} |")
    return lines + [""]


def undocumented(rows: list[MethodRow]) -> list[str]:
    """`method.hyperparameter` for each hyperparameter without a one-line doc: the page would show an empty cell."""
    return [f"{row.name}.{hp.name}" for row in rows for hp in row.hyperparameters if not hp.doc]


def render_methods_page(schema: dict[str, Any], intro_path: Path) -> str:
    """The hand-written introduction (docs/gen/methods_intro.md), the common options, then one section per method.

    Fails (and with it the strict docs build) when a hyperparameter has no one-line doc.
    """
    rows = method_rows(schema)
    if missing := undocumented(rows):
        raise ValueError(f"hyperparameters without a one-line doc (give each a description): {', '.join(missing)}")
    lines = [intro_path.read_text().rstrip(), "", "## Options every method takes { #common-options }", ""]
    lines += common_options(schema) + ["", "## The methods", "",
                                       ", ".join(f"[`{row.name}`](#{row.name})" for row in rows), ""]
    for row in rows:
        lines += render_method(row)
    return "\n".join(lines) + "\n"
