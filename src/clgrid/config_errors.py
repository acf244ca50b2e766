"""Config errors a person can act on: the file and field, the value, what is allowed, what the field means.

Every config error, whether the schema (``workflow/schemas/config.schema.yaml``) or a cross-field check
(``clgrid.validation.check_config``) finds it, is a ``ConfigError`` printed in one form::

    Config error in config/config.yaml, line 12:
      field:   benchmarks.split_digits.train.lr
      value:   -0.1
      problem: out of range
      allowed: a number > 0
      meaning: <the field's description in the schema>
      fix:     <what to change, where the check knows>

This module is a leaf of clgrid's config layer (it imports none of ``clgrid.config``, ``clgrid.config_checks``):
the error, the schema (loaded with what the code declares filled in), validation that fills defaults, and the
message. ``clgrid.validation.check``, on top, runs the checks in order (``check_schema`` here, then the
cross-field checks) and completes an error with ``explain``; ``check`` is found here too.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import textwrap
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

from clgrid.catalog.archs import HEAD_OPTIONS, archs


class _Missing:
    def __repr__(self) -> str:
        return "<not set>"


MISSING: Any = _Missing()
"""The value of a field that is absent (a required key, an unknown dataset's class count)."""

PathLike = Union[str, Sequence[Union[str, int]]]


class ConfigError(ValueError):
    """A config that cannot describe a runnable grid: where, the value, what is allowed, and how to fix it.

    ``ConfigError("problem", path=["benchmarks", "b", "n_tasks"], value=3, allowed="1, 2, 5, 10", fix="...")``.
    ``check`` adds the file (and line) the field came from and the field's description from the schema.
    """

    def __init__(self, problem: str = "", *, path: PathLike = (), value: Any = MISSING, allowed: str = "",
                 fix: str = "", description: str | None = None, describe_as: PathLike | None = None,
                 kind: str = ""):
        super().__init__(problem)
        self.problem = problem
        self.parts: tuple[str | int, ...] = parse_path(path)
        self.value = value
        self.allowed = allowed
        self.fix = fix
        self.description = description
        # The schema field whose description explains this one (a variant's params.x is method_params.<m>.x).
        self.describe_as: tuple[str | int, ...] = self.parts if describe_as is None else parse_path(describe_as)
        self.kind = kind  # "unknown_key", "missing", ... where the kind changes how the error is re-pathed
        self.source = ""  # "config/config.yaml, line 12": set by ``check``

    @property
    def path(self) -> str:
        return field_path(self.parts)

    def __str__(self) -> str:
        head = f"Config error in {self.source}:" if self.source else "Config error:"
        value = ""
        if self.parts:
            value = "(not set)" if self.value is MISSING else show(self.value)
        rows = [("field", self.path), ("value", value), ("problem", self.problem), ("allowed", self.allowed),
                ("meaning", self.description or ""), ("fix", self.fix)]
        lines = [head]
        for label, text in rows:
            if text:
                lines.append(textwrap.fill(" ".join(str(text).split()), width=110, initial_indent=f"  {label + ':':9}",
                                           subsequent_indent=" " * 11, break_long_words=False,
                                           break_on_hyphens=False))
        return "\n".join(lines)


# --- paths and values as a person writes them -------------------------------------------------------------


def field_path(parts: Iterable[str | int]) -> str:
    """``["methods", 2]`` -> ``methods[2]``; ``["method_params", "ewc", "ewc_lambda"]`` -> dotted."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def parse_path(path: PathLike) -> tuple[str | int, ...]:
    """The inverse of ``field_path`` for a string (a list of parts passes through)."""
    if not isinstance(path, str):
        return tuple(path)
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    return tuple(parts)


def show(value: Any, limit: int = 120) -> str:
    """A value as YAML would spell it (strings quoted, so ``'0.1'`` is visibly not a number)."""
    if value is MISSING:
        return "(not set)"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf") if math.isinf(value) else repr(value)
    elif isinstance(value, (int, str)):
        text = repr(value)
    elif isinstance(value, Mapping):
        text = "{" + ", ".join(f"{k}: {show(v, limit)}" for k, v in value.items()) + "}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(show(v, limit) for v in value) + "]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def get_path(config: Any, parts: Sequence[str | int]) -> Any:
    """The value at ``parts`` in ``config``, or MISSING."""
    node = config
    for part in parts:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return MISSING
    return node


def choices(values: Iterable[Any]) -> str:
    return ", ".join(v if isinstance(v, str) else show(v) for v in values)


def did_you_mean(word: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --- habits: numbers PyYAML reads as strings, numbers that are not finite ---------------------------------

# YAML 1.1 (PyYAML) needs a dot in a float: 1e-3 and 5E4 stay strings, 1.0e-3 is a float.
_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def coerce_numbers(node: Any) -> Any:
    """Turn strings in scientific notation (``'1e-3'``) into floats, in place, everywhere in the config."""
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = coerce_numbers(value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            node[i] = coerce_numbers(value)
    elif isinstance(node, str) and _SCIENTIFIC.match(node.strip()):
        return float(node)
    return node


def check_finite(node: Any, parts: tuple[str | int, ...] = ()) -> None:
    """Refuse ``.inf`` and ``.nan`` anywhere: no hyperparameter or setting means them, and NaN passes every
    schema bound (a comparison with NaN is false)."""
    if isinstance(node, dict):
        for key, value in node.items():
            check_finite(value, (*parts, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_finite(value, (*parts, i))
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError("not a finite number", path=parts, value=node, allowed="a finite number",
                          fix="write the number you mean (e.g. 1e6 for a large weight); infinity and NaN are "
                              "never meaningful settings")


# --- the schema: validation that fills defaults, and what a field allows ----------------------------------


@lru_cache(maxsize=8)
def load_schema(schema_path: str) -> dict[str, Any]:
    """The schema file with what the code declares filled in (so it is written once): each arch's options, and
    ``method_params`` built from each method's ``PARAMS`` (``clgrid.catalog.methods``, torch-free)."""
    import yaml

    from clgrid.catalog import methods

    schema = yaml.safe_load(Path(schema_path).read_text())
    add_arch_options(schema)
    return methods.insert_into_schema(schema)


def add_arch_options(schema: dict[str, Any]) -> None:
    """Each arch of ``clgrid.catalog.archs``, in the backbone schema: the ``arch`` enum, and a rule per arch that
    fills its declared defaults and refuses another family's options. An option the schema does not describe
    (a lab's own family) is accepted with any value."""
    backbone = schema["$defs"]["backbone"]
    declared = archs()
    backbone["properties"]["arch"]["enum"] = list(declared)
    for name, arch in declared.items():
        for option in arch.defaults:
            backbone["properties"].setdefault(option, {"description": f"{name}: an option of {arch.module}"})
    backbone["allOf"] = [*backbone.get("allOf", []), *(
        {"if": {"properties": {"arch": {"const": name}}},
         "then": {"propertyNames": {"enum": ["arch", *arch.defaults, *HEAD_OPTIONS]},
                  "properties": {option: {"default": default} for option, default in arch.defaults.items()}}}
        for name, arch in declared.items())]


@lru_cache(maxsize=1)
def _default_filling_validator():
    # The recipe of the jsonschema FAQ that snakemake.utils.validate uses: each `properties` keyword first fills
    # the defaults of absent keys. Unlike snakemake's copy, defaults are copied (the schema is cached here, and a
    # filled-in {} must not be shared between configs) and only objects are filled (a list where an object
    # belongs is then reported, not a crash).
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]
    # JSON Schema counts 32.0 as an integer; the jobs do not (nn.Linear(8, 32.0) and a dataset's image_size: 224.0
    # fail there), so an integer field takes whole numbers written without a fraction part.
    types = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults}, type_checker=types)


def validate(config: dict[str, Any], schema_path: str | Path) -> None:
    """Validate ``config`` against the schema in place, filling defaults; raise the best error as ConfigError."""
    from jsonschema.exceptions import best_match

    schema = load_schema(str(schema_path))
    errors = list(_default_filling_validator()(schema).iter_errors(config))
    if errors:
        raise from_schema_error(best_match(errors), schema, config)


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


# --- where a field came from ------------------------------------------------------------------------------


def _line_of(path: Path, parts: Sequence[str | int]) -> int | None:
    """1-based line of the deepest node of ``parts`` that the YAML file holds, or None."""
    import yaml

    try:
        node = yaml.compose(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                break
            key, node = match[-1]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _depth_in(data: Any, parts: Sequence[str | int]) -> int:
    depth = 0
    for part in parts:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            break
        depth += 1
    return depth


def source_of(parts: Sequence[str | int], files: Sequence[str | Path], overrides: Mapping[str, Any] | None = None) -> str:
    """Which file (and line) a field comes from: the last of ``files`` holding most of its path, or ``--config``."""
    import yaml

    if overrides and parts and parts[0] in overrides:
        return "--config " + str(parts[0])
    names = [_display(f) for f in files]
    best, best_depth = None, 0
    for f in reversed(list(files)):  # later files override earlier ones
        try:
            data = yaml.safe_load(Path(f).read_text())
        except (OSError, yaml.YAMLError):
            continue
        depth = _depth_in(data, parts)
        if depth > best_depth:
            best, best_depth = f, depth
    if best is None:
        return " + ".join(names) or "the config"
    line = _line_of(Path(best), parts)
    return _display(best) + (f", line {line}" if line else "")


def _display(path: str | Path) -> str:
    rel = os.path.relpath(os.path.abspath(path))
    return rel if not rel.startswith("..") else str(path)


# --- what YAML makes of the text: habits that load without an error but not as the writer meant -------------

_STR = "tag:yaml.org,2002:str"
_OCTAL = re.compile(r"^[-+]?0[0-7_]+$")  # YAML 1.1: 010 is 8
_BOOL_WORDS = ("yes", "no", "on", "off", "y", "n")


def _scalar_text(node) -> str:
    return node.value if isinstance(node.value, str) else ""


def _resolved(node) -> Any:
    """The Python value PyYAML makes of a scalar node (as snakemake's loader does)."""
    import yaml

    return yaml.SafeLoader("").construct_object(node, deep=True) if node.tag != _STR else node.value


def lint_yaml(path: str | Path) -> ConfigError | None:
    """The first YAML habit in a config file that loads silently as something else than written, or None.

    A key written twice (PyYAML keeps the last and drops the first without a word), a key YAML 1.1 reads as a
    boolean, number or null (``on:``, ``no:``, ``1:``), a number with a leading zero (``010`` is octal 8), one with a
    colon (``1:30`` is sexagesimal 90), an empty value (null, e.g. ``pretrained:`` means random weights).
    """
    import yaml

    try:
        root = yaml.compose(Path(path).read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None  # unreadable: the loader that read the config has said so already

    def where(node) -> str:
        return f"{_display(path)}, line {node.start_mark.line + 1}"

    def walk(node, parts: tuple) -> ConfigError | None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:merge":
                    continue
                if isinstance(key, yaml.ScalarNode) and key.tag != _STR:
                    text = _scalar_text(key)
                    comma = (" (in a {...} mapping a comma ends an entry: a decimal comma such as lr: 0,001 "
                             "leaves the key 001; write decimals with a dot)"
                             if key.tag == "tag:yaml.org,2002:int" and node.flow_style else "")
                    err = ConfigError(
                        f"YAML 1.1 reads the key {text or '(empty)'} as {show(_resolved(key))}, not as the name "
                        f"'{text}'{comma}", path=(*parts, text), value=MISSING,
                        allowed="a name (quote a key YAML reads as true/false, null or a number: 'on', 'no', 'null')",
                        fix=f"write the key in quotes: '{text}':" if text else "write the key's name before the colon")
                    err.source = where(key)
                    return err
                name = key.value if isinstance(key, yaml.ScalarNode) else id(key)
                if name in seen:
                    err = ConfigError(
                        f"'{name}' is written twice in {field_path(parts) or 'the top level'} (lines "
                        f"{seen[name].start_mark.line + 1} and {key.start_mark.line + 1}); YAML keeps the last and "
                        "drops the first without a word", path=(*parts, name), value=MISSING,
                        allowed="each key once per mapping", kind="duplicate",
                        fix="merge the two into one entry (or delete the one you do not mean)")
                    err.source = where(key)
                    return err
                seen[name] = key
                found = walk(value, (*parts, name))
                if found:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                found = walk(item, (*parts, i))
                if found:
                    return found
        elif isinstance(node, yaml.ScalarNode) and node.style is None and parts:
            text = node.value
            err = None
            if node.tag == "tag:yaml.org,2002:null" and text == "":
                err = ConfigError("empty value: YAML reads it as null", path=parts, value=None,
                                  allowed="a value; null (or ~) written out where null is meant",
                                  fix=f"write the value after '{parts[-1]}:', or null if you mean null"
                                  if isinstance(parts[-1], str) else "write the item, or remove the empty '-'")
            elif node.tag == "tag:yaml.org,2002:int" and _OCTAL.match(text):
                err = ConfigError(f"YAML 1.1 reads {text} as the octal number {_resolved(node)}", path=parts,
                                  value=_resolved(node), allowed="a number without leading zeros",
                                  fix=f"write {int(text.replace('_', ''), 10)} (or quote it, '{text}', for text)")
            elif node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and ":" in text:
                err = ConfigError(f"YAML 1.1 reads {text} as the base-60 number {_resolved(node)}", path=parts,
                                  value=_resolved(node), allowed="a number without colons",
                                  fix=f"write the number you mean (or quote it, '{text}', for text)")
            if err:
                err.source = where(node)
                return err
        return None

    return walk(root, ())


def _bool_word(files: Sequence[str | Path], parts: Sequence[str | int]) -> str | None:
    """The word (yes, no, on, off) that YAML read as a boolean at ``parts``, in the last file that sets it."""
    import yaml

    for path in reversed(list(files)):
        try:
            node = yaml.compose(Path(path).read_text(), Loader=yaml.SafeLoader)
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        for part in parts:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in reversed(node.value) if k.value == str(part)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
            else:
                node = None
            if node is None:
                break
        if isinstance(node, yaml.ScalarNode) and node.style is None and node.value.lower() in _BOOL_WORDS:
            return node.value
    return None


# --- the whole check ---------------------------------------------------------------------------------------


def check_schema(config: dict[str, Any], schema_path: str | Path, files: Sequence[str | Path] = ()) -> None:
    """The checks before the cross-field ones: YAML habits in ``files``, numbers, the schema (filling defaults)."""
    for path in files:
        habit = lint_yaml(path)
        if habit is not None:
            raise habit
    coerce_numbers(config)
    check_finite(config)
    validate(config, schema_path)


def explain(err: ConfigError, schema: dict[str, Any], files: Sequence[str | Path] = (),
            overrides: Mapping[str, Any] | None = None) -> None:
    """Complete ``err`` in place with what its raiser did not know: the field's description in the schema, the
    file and line (or ``--config``) it came from, and the YAML word behind a boolean."""
    if err.description is None:
        err.description = describe(schema, err.describe_as)
        if err.description is None and err.describe_as and isinstance(err.describe_as[-1], int):
            err.description = describe(schema, err.describe_as[:-1])  # an item means what its list means
    if not err.source and (err.parts or files):
        err.source = source_of(err.parts, files, overrides)
    if err.kind in ("type", "enum") and isinstance(err.value, bool) and not err.source.startswith("--config"):
        word = _bool_word(files, err.parts)
        if word:
            err.problem += f" (YAML 1.1 reads {word} as {show(err.value)}; quote it, '{word}', to write the word)"
    if err.source.startswith("--config"):  # no quotes to remove: Snakemake's --config parsed it as text
        err.problem = err.problem.replace("remove the quotes to write a number", "--config passed it as text")


def __getattr__(name: str) -> Any:
    """``check`` runs the cross-field checks of ``clgrid.config``, which sit above this module: it lives in
    ``clgrid.validation``, and is found here too for the Snakefile and the callers that name it here."""
    if name == "check":
        from clgrid.validation import check

        return check
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
