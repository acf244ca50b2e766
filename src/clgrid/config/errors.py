"""Config errors a person can act on: the file and field, the value, what is allowed, what the field means.

Every config error, whether the schema (``workflow/schemas/config.schema.yaml``) or a cross-field check
(``clgrid.config.checks``) finds it, is a ``ConfigError`` printed in one form::

    Config error in config/config.yaml, line 12:
      field:   benchmarks.split_digits.train.lr
      value:   -0.1
      problem: out of range
      allowed: a number > 0
      meaning: <the field's description in the schema>
      fix:     <what to change, where the check knows>

This module is the leaf of clgrid's config layer: it imports none of it. ``clgrid.config.validation.check``, on
top, completes an error with the field's description and the file it came from (``explain``).
"""

from __future__ import annotations

import difflib
import math
import re
import textwrap
from typing import Any, Iterable, Mapping, Sequence, Union


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
