"""The methods page, generated from the registered methods, so that each method is described where it is coded.

All reading of the methods goes through `method_rows()`, which reads the torch-free method catalog
(`clgrid.catalog.methods`): each method class's `PARAMS` (default, type, range, one-line doc) and `FACTS`, and its
docstrings, from the method's own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schema_md import cell, literal, range_text, type_text


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
    """Every registered method, sorted by name, with what the page shows of it. The one place methods are read:
    ``clgrid.catalog.methods``, which reads each method's ``PARAMS``/``FACTS`` declarations from its source
    (torch-free); ``schema`` is unused since the schema's method blocks are built from the same declarations."""
    import ast

    from clgrid.catalog import methods as catalog
    from clgrid.catalog.declared import module_file

    rows = []
    for name, info in catalog.catalog().items():
        paper = first_paragraph(ast.get_docstring(ast.parse(module_file(info.module).read_text())))
        hyperparameters = tuple(_hyperparameter(key, node) for key, node in info.params.items())
        rows.append(MethodRow(name, f"{info.module}.{info.cls}", paper, info.doc or paper,
                              bool(info.facts.get("needs_clip")), hyperparameters))
    return rows


def _hyperparameter(name: str, node: dict[str, Any]) -> Hyperparameter:
    """One hyperparameter, all from its declaration: default, type, range and one-line doc."""
    return Hyperparameter(name, node.get("default"), type_text(node), range_text(node),
                          first_paragraph(node.get("description")))


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
