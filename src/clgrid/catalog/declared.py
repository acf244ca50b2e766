"""Literal declarations read from a module's source without importing it (so reading them costs no torch import).

A method or backbone module declares its facts as plain literals (dicts, lists, strings, numbers) assigned at module
level or in a class body; ``declarations`` finds them with ``ast`` and evaluates them with ``ast.literal_eval``, so a
declaration can never run code, and planning a 10,000-job grid never imports torch.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # src/clgrid


class DeclarationError(ValueError):
    """A declaration that is not a literal, or a module that cannot be found: names the file and line."""


@dataclass(frozen=True)
class Declared:
    """What one class (or the module itself, ``cls=None``) declares: its base-class names and its literal values."""

    module: str
    cls: str | None
    bases: tuple[str, ...]
    values: dict[str, Any]
    line: int


def module_file(module: str) -> Path:
    """The source file of ``module``. clgrid's own modules are found on disk without importing their packages
    (``clgrid.methods/__init__`` imports torch); other packages' through ``importlib.util.find_spec``, which imports
    only their parent packages."""
    parts = module.split(".")
    if parts[0] == "clgrid":
        base = PACKAGE_ROOT.joinpath(*parts[1:])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        raise DeclarationError(f"no module {module!r} under {PACKAGE_ROOT}")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as err:
        raise DeclarationError(f"cannot find module {module!r}: {err}") from err
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise DeclarationError(f"cannot find the Python source of module {module!r} (is its package installed?)")
    return Path(spec.origin)


@lru_cache(maxsize=None)
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _literal(node: ast.AST, path: Path) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError as err:
        raise DeclarationError(f"{path}:{node.lineno}: a declaration must be a literal (dicts, lists, strings, "
                               f"numbers, True/False/None), read without running code: {err}") from err


def _assigned(body: list[ast.stmt], names: frozenset[str], path: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for stmt in body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names:
                values[target.id] = _literal(value, path)
    return values


def declarations(module: str, names: tuple[str, ...]) -> list[Declared]:
    """The module's own declarations of ``names`` (``cls=None``) and each top-level class's, in source order.

    A class appears even when it declares none of ``names`` (its bases may), so a caller can resolve inheritance."""
    path = module_file(module)
    tree = _parsed(path)
    wanted = frozenset(names)
    found = [Declared(module, None, (), _assigned(tree.body, wanted, path), 1)]
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef):
            bases = tuple(ast.unparse(base) for base in stmt.bases)
            found.append(Declared(module, stmt.name, bases, _assigned(stmt.body, wanted, path), stmt.lineno))
    return found
