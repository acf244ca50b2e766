"""The config reference page, generated from the config schema, so that no key is documented by hand.

Every object of the schema becomes one section (its dotted path, `<name>` standing for a key the user chooses) with a
table of its keys: type, default, allowed values and the schema's description. Method hyperparameters are the one
exception: they have their own generated page (methods.md), and this page links there.
"""

from __future__ import annotations

import re
from typing import Any

from schema_md import cell, default_text, range_text, resolve, type_text

METHODS_PAGE = "../methods.md"
"""Where the method hyperparameters are documented, relative to this page (reference/config.md)."""

INTRO = """# Config reference

Every key of an experiment config, generated from `workflow/schemas/config.schema.yaml` when the site is built
(the schema is read through `clgrid.config.schema.load_schema`, as the workflow reads it). Snakemake validates a
config against this schema and fills in the defaults shown here before any job runs; [Writing a config](../config.md)
explains how the pieces fit together. `<name>` in a path stands for a name you choose (a benchmark, a backbone, a
dataset, a variant). "–" in the default column: an absent key stays absent.
"""


def anchor(path: str) -> str:
    """A stable HTML id for a dotted key path: `benchmarks.<name>.train` -> `benchmarks-name-train`."""
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "top-level"


def render_config_reference(schema: dict[str, Any]) -> str:
    """The whole page: the top level first, then every object below it, depth first, in schema order."""
    sections: list[str] = [INTRO, schema.get("description", "").strip(), ""]
    _render_object("top level", schema, schema, sections)
    return "\n".join(sections) + "\n"


def _render_object(path: str, node: dict[str, Any], schema: dict[str, Any], sections: list[str]) -> None:
    node = resolve(node, schema)
    properties = node.get("properties", {})
    required = set(node.get("required", []))
    children: list[tuple[str, dict[str, Any]]] = []
    sections += [f"## `{path}` {{ #{anchor(path)} }}", ""]
    if path != "top level" and node.get("description"):
        sections += [cell(node["description"]), ""]
    sections += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for key, child in properties.items():
        child_path = key if path == "top level" else f"{path}.{key}"
        child = resolve(child, schema)
        link, nested = _nested_object(child_path, child, schema)
        children += nested
        description = " ".join(part for part in (cell(child.get("description", "")), link and f"({link})") if part)
        sections.append(f"| `{key}` | {type_text(child)} | {default_text(child, key in required)} "
                        f"| {range_text(child)} | {description} |")
    sections.append("")
    sections += _arch_defaults(node)
    for child_path, child in children:
        _render_object(child_path, child, schema, sections)


def _nested_object(path: str, node: dict[str, Any], schema: dict[str, Any]) -> tuple[str, list]:
    """A link to where a key's own keys are described, and the sections to render for them (none for a leaf)."""
    if path == "method_params":
        return f"each method's keys: [Methods]({METHODS_PAGE})", []
    if node.get("properties"):
        return f"see [`{path}`](#{anchor(path)})", [(path, node)]
    values = node.get("additionalProperties")
    if isinstance(values, dict):
        values = resolve(values, schema)
        if values.get("properties"):
            child_path = f"{path}.<name>"
            return f"each value: see [`{child_path}`](#{anchor(child_path)})", [(child_path, values)]
    return "", []


def _arch_defaults(node: dict[str, Any]) -> list[str]:
    """The `if arch is X then` blocks of the backbone schema: which keys each family takes and what it fills in."""
    rules = [rule for rule in node.get("allOf", []) if "if" in rule and "then" in rule]
    if not rules:
        return []
    condition_key = next(iter(rules[0]["if"]["properties"]))
    lines = [f"The keys allowed and the defaults filled in depend on `{condition_key}`:", "",
             "| when | keys allowed | defaults filled in |", "|---|---|---|"]
    for rule in rules:
        (key, condition), = rule["if"]["properties"].items()
        values = [condition["const"]] if "const" in condition else condition.get("enum", [])
        then = rule["then"]
        allowed = ", ".join(f"`{k}`" for k in then.get("propertyNames", {}).get("enum", []))
        defaults = ", ".join(f"`{k}`: {default_text(v)}" for k, v in then.get("properties", {}).items())
        lines.append(f"| `{key}` = {' or '.join(f'`{v}`' for v in values)} | {allowed} | {defaults} |")
    return lines + [""]
