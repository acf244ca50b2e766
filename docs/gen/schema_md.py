"""JSON-Schema nodes as Markdown table cells: the shared vocabulary of the config reference and the methods page.

Both generated pages describe keys of ``workflow/schemas/config.schema.yaml``; writing a key's type, default and
allowed values in one place keeps the two pages from describing the same key two ways.
"""

from __future__ import annotations

import json
from typing import Any

BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))


def resolve(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The node a local ``$ref`` ("#/$defs/name") points to, under the node's own keys; other nodes as they are."""
    ref = node.get("$ref")
    if not ref or not ref.startswith("#/$defs/"):
        return node
    target = schema["$defs"][ref.removeprefix("#/$defs/")]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def literal(value: Any) -> str:
    """A YAML value as the reader would write it in a config: `null`, `true`, `[256, 256]`, `ema`."""
    return f"`{json.dumps(value, ensure_ascii=False)}`" if not isinstance(value, str) else f"`{value}`"


def cell(text: str) -> str:
    """Free text made safe for one table cell: one line, no table pipes, no angle brackets read as HTML."""
    flat = " ".join(str(text).split())
    return flat.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def type_text(node: dict[str, Any]) -> str:
    """What kind of value a key takes: `number`, `integer or null`, `list of string`, `one of: ...`."""
    if "const" in node:
        return literal(node["const"])
    if "enum" in node:
        return "one of " + ", ".join(literal(v) for v in node["enum"])
    for combinator in ("oneOf", "anyOf"):
        if combinator in node and "type" not in node:
            return " or ".join(type_text(option) for option in node[combinator])
    types = node.get("type")
    names = types if isinstance(types, list) else [types] if types else []
    words = [_array_text(node) if name == "array" else name for name in names]
    return " or ".join(words) if words else "any"


def _array_text(node: dict[str, Any]) -> str:
    items = node.get("items")
    if not isinstance(items, dict) or not items:
        return "list"
    inner = type_text(items)
    bounds = range_text(items)
    return f"list of {inner}" + (f" ({bounds})" if bounds else "")


def range_text(node: dict[str, Any]) -> str:
    """The bounds a value must keep (`≥ 0`, `> 0, ≤ 1`, at least 1 item), empty when it has none."""
    parts = [f"{sign} {node[key]}" for key, sign in BOUNDS if key in node]
    if "minItems" in node:
        parts.append(f"at least {node['minItems']} item{'s' if node['minItems'] != 1 else ''}")
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    if node.get("uniqueItems"):
        parts.append("no repeats")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    return ", ".join(parts)


def default_text(node: dict[str, Any], required: bool = False) -> str:
    """The default the validator fills in, `required`, or a dash when an absent key is simply absent."""
    if "default" in node:
        return literal(node["default"])
    return "required" if required else "–"
