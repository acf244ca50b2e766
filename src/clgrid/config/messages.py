"""What the schema says about a field, in words: where a field is defined (across ``$ref``, ``allOf``, ``then``),
its description, what it allows (``a number > 0``), and a jsonschema error turned into a ``ConfigError``."""

from __future__ import annotations

import re
from typing import Any, Sequence

from clgrid.config.errors import MISSING, ConfigError, choices, did_you_mean, field_path, get_path, show


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if not ref or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _variants(schema: Any, root: dict[str, Any], depth: int = 0) -> list[dict[str, Any]]:
    """A schema and every schema it combines with ($ref, allOf, anyOf, oneOf, then/else): where keys are defined."""
    if not isinstance(schema, dict) or depth > 12:
        return []
    found = [schema]
    if "$ref" in schema:
        found += _variants(_resolve(schema, root), root, depth + 1)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            found += _variants(sub, root, depth + 1)
    for key in ("then", "else"):
        if key in schema:
            found += _variants(schema[key], root, depth + 1)
    return found


def known_keys(schema: dict[str, Any], root: dict[str, Any]) -> list[str]:
    """Keys an object schema defines, across $ref and allOf (what ``unevaluatedProperties: false`` accepts)."""
    keys: list[str] = []
    for sub in _variants(schema, root):
        keys += [k for k in sub.get("properties", {}) if k not in keys]
    return sorted(keys)


def _children(schema: Any, key: str | int, root: dict[str, Any]) -> list[dict[str, Any]]:
    """The schemas of ``key`` inside ``schema`` (a property, a pattern property, additionalProperties, items)."""
    found: list[dict[str, Any]] = []
    fallback: list[dict[str, Any]] = []
    for sub in _variants(schema, root):
        if isinstance(key, int):
            if isinstance(sub.get("items"), dict):
                found.append(sub["items"])
            continue
        if key in sub.get("properties", {}):
            found.append(sub["properties"][key])
        for pattern, pattern_schema in sub.get("patternProperties", {}).items():
            if re.search(pattern, key):
                found.append(pattern_schema)
        if isinstance(sub.get("additionalProperties"), dict):
            fallback.append(sub["additionalProperties"])
    return found or fallback


def field_schemas(root: dict[str, Any], parts: Sequence[str | int]) -> list[dict[str, Any]]:
    """The schemas that define the field at ``parts`` (empty when the schema does not know it)."""
    nodes = [root]
    for part in parts:
        nodes = [child for node in nodes for child in _children(node, part, root)]
        if not nodes:
            return []
    return nodes


def describe(root: dict[str, Any], parts: Sequence[str | int]) -> str | None:
    """The field's ``description`` in the schema (None for the root and for fields without one).

    A field that is only a ``$ref`` takes the referenced block's description; a block that mixes one in
    (``method_params.ewc``: its own keys plus the options every method takes) does not.
    """
    if not parts:
        return None
    for schema in field_schemas(root, parts):
        while not schema.get("description") and set(schema) <= {"$ref", "default"} and "$ref" in schema:
            schema = _resolve(schema, root)
        if schema.get("description"):
            return " ".join(str(schema["description"]).split())
    return None


_NOUNS = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "true or false",
          "null": "null", "array": "a list", "object": "a mapping (key: value)"}


def _bounds(schema: dict[str, Any]) -> str:
    low = ("minimum", ">="), ("exclusiveMinimum", ">")
    high = ("maximum", "<="), ("exclusiveMaximum", "<")
    lo = [(op, schema[k]) for k, op in low if k in schema]
    hi = [(op, schema[k]) for k, op in high if k in schema]
    if lo and hi and lo[0][0] == ">=" and hi[0][0] == "<=":
        return f" in [{show(lo[0][1])}, {show(hi[0][1])}]"
    text = " and ".join(f"{op} {show(v)}" for op, v in lo + hi)
    return f" {text}" if text else ""


def expected(schema: Any, root: dict[str, Any], depth: int = 0) -> str:
    """What a schema allows, in words: ``a number > 0``, ``one of: sgd, adam``, ``an integer >= 1, or null``."""
    if not isinstance(schema, dict) or depth > 6:
        return ""
    schema = {**_resolve(schema, root), **{k: v for k, v in schema.items() if k != "$ref"}}
    if "enum" in schema:
        return "one of: " + choices(schema["enum"])
    if "const" in schema:
        return f"exactly {show(schema['const'])}"
    for key in ("oneOf", "anyOf"):
        if key in schema and not all(set(branch) <= {"required"} for branch in schema[key]):
            return ", or ".join(t for t in (expected(b, root, depth + 1) for b in schema[key]) if t)
    types = schema.get("type") or (["number"] if _bounds(schema) else [])
    types = [types] if isinstance(types, str) else list(types)
    words = []
    for kind in types:
        word = _NOUNS.get(kind, kind)
        if kind in ("number", "integer"):
            word += _bounds(schema)
        elif kind == "string" and "pattern" in schema:
            word += f" matching {schema['pattern']}"
        elif kind == "array":
            extra = []
            if schema.get("minItems"):
                extra.append(f"at least {schema['minItems']} item{'s' if schema['minItems'] > 1 else ''}")
            if "maxItems" in schema:
                extra.append(f"at most {schema['maxItems']} items")
            if schema.get("uniqueItems"):
                extra.append("no repeats")
            item = expected(schema.get("items"), root, depth + 1)
            if item:
                extra.append(f"each item {item}")
            word += f" ({'; '.join(extra)})" if extra else ""
        elif kind == "object":
            keys = list(schema.get("properties", {}))
            if schema.get("required"):
                word = f"a mapping with {', '.join(schema['required'])}"
            elif keys and schema.get("additionalProperties") is False:
                word = f"a mapping of {', '.join(keys)}"
        words.append(word)
    if "pattern" in schema and "string" not in types:
        words.append(f"a string matching {schema['pattern']}")
    return ", or ".join(words)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    return {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__)


def _outermost_alternative(error):
    # best_match descends into oneOf/anyOf and returns one branch's complaint ("'randm' is not of type 'array'");
    # the alternatives together say what is allowed at that field.
    while (error.parent is not None and error.parent.validator in ("oneOf", "anyOf")
           and list(error.parent.absolute_path) == list(error.absolute_path)):
        error = error.parent
    return error


def from_schema_error(error, root: dict[str, Any], config: Any) -> ConfigError:
    """A jsonschema ``ValidationError`` (best_match's pick) in the one form."""
    error = _outermost_alternative(error)
    parts = tuple(error.absolute_path)
    keyword, schema, instance = error.validator, error.schema, error.instance
    schema_path = list(error.absolute_schema_path)

    if len(schema_path) >= 2 and schema_path[-2] == "propertyNames":
        key = instance
        parent = parts
        parts = (*parts, key)
        if keyword == "enum":
            owner = get_path(config, (*parent, "arch"))
            scope = f" for arch {owner}" if isinstance(owner, str) else ""
            return ConfigError(f"unknown key '{key}' in {field_path(parent) or 'the config'}{scope}"
                               f"{did_you_mean(key, error.validator_value)}",
                               path=parts, value=get_path(config, parts),
                               allowed="keys " + choices(sorted(error.validator_value)),
                               describe_as=parent, kind="unknown_key",
                               fix=f"remove '{key}' or rename it to one of the allowed keys")
        return ConfigError(f"the name '{key}' is not allowed here", path=parts, value=key,
                           allowed=f"a name matching {error.validator_value}"
                           + (" (letters, digits and _)" if error.validator_value == "^[A-Za-z0-9_]+$" else ""),
                           describe_as=parent, kind="bad_name", fix=f"rename '{key}'")

    if keyword in ("additionalProperties", "unevaluatedProperties") and isinstance(instance, dict):
        if keyword == "additionalProperties":
            valid = sorted(schema.get("properties", {}))
            patterns = list(schema.get("patternProperties", {}))
            extra = [k for k in instance if k not in valid and not any(re.search(p, k) for p in patterns)]
        else:
            valid = known_keys(schema, root)
            extra = [k for k in instance if k not in valid]
        key = extra[0] if extra else "?"
        return ConfigError(f"unknown key '{key}' in {field_path(parts) or 'the config'}{did_you_mean(key, valid)}",
                           path=(*parts, key), value=instance.get(key, MISSING),
                           allowed="keys " + choices(valid), describe_as=parts, kind="unknown_key",
                           fix=f"remove '{key}' or rename it to one of the allowed keys")

    if keyword == "required" and isinstance(instance, dict):
        missing = [k for k in error.validator_value if k not in instance]
        key = missing[0] if missing else error.validator_value[0]
        child = [s for sub in _variants(schema, root) for s in [sub.get("properties", {}).get(key)] if s]
        return ConfigError(f"required key '{key}' is missing from {field_path(parts) or 'the config'}",
                           path=(*parts, key), allowed=expected(child[0], root) if child else "",
                           kind="missing", fix=f"add {key}: <value> under {field_path(parts) or 'the top level'}")

    if keyword == "anyOf" and all(set(b) <= {"required"} for b in error.validator_value):
        options = [" and ".join(b["required"]) for b in error.validator_value]
        return ConfigError(f"{field_path(parts)} needs {' or '.join(options)}, and has neither",
                           path=(*parts, error.validator_value[0]["required"][0]),
                           allowed=f"{' or '.join(options)} set under {field_path(parts)}", kind="missing",
                           describe_as=parts, fix=f"add {' or '.join(f'{o}: <value>' for o in options)}")

    allowed = expected(schema, root)
    if keyword == "type":
        problem = f"wrong type: {_type_name(instance)}"
        if isinstance(instance, str) and re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)\s*", instance):
            problem += " (remove the quotes to write a number)"
        elif isinstance(instance, float) and instance.is_integer() and "integer" in str(schema.get("type")):
            problem += f" with a fraction part; this field takes whole numbers (write {int(instance)})"
    elif keyword == "enum":
        problem = f"not one of the choices{did_you_mean(instance, error.validator_value) if isinstance(instance, str) else ''}"
    elif keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        problem = "out of range"
    elif keyword in ("oneOf", "anyOf"):
        problem = "matches none of the allowed forms"
    elif keyword == "pattern":
        problem = "does not match the pattern"
    elif keyword == "uniqueItems":
        problem = "has repeated items"
    elif keyword in ("minItems", "minProperties"):
        problem = "too few items" if keyword == "minItems" else "too few entries"
        if keyword == "minProperties":
            allowed = f"at least {error.validator_value} entr{'y' if error.validator_value == 1 else 'ies'}"
    elif keyword == "maxItems":
        problem = "too many items"
    else:
        problem = error.message
    return ConfigError(problem, path=parts, value=instance, allowed=allowed, kind=keyword)
