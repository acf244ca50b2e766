"""What YAML makes of the text: habits that load without an error but not as the writer meant, and where a field
came from (file and line, or ``--config``) for the message."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from clgrid.config.errors import MISSING, ConfigError, field_path, show


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
