"""The package's modules import each other without a cycle: a module's imports at module level (what runs when it
is imported) form a graph with no loop, so each module can be read, tested and moved knowing only what is below
it. Imports inside a function (torch-heavy modules a check needs only for some configs) are not edges."""

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "clgrid"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _module_level(body: list[ast.stmt]):
    """The statements that run on import: the body, and inside top-level if/try blocks (not TYPE_CHECKING)."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(stmt.test):
                yield from _module_level(stmt.body + stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from _module_level(stmt.body + stmt.orelse + stmt.finalbody
                                     + [s for handler in stmt.handlers for s in handler.body])
        else:
            yield stmt


def _targets(stmt: ast.stmt, module: str, is_package: bool) -> list[str]:
    """The clgrid modules an import statement loads by name (a submodule named in ``from pkg import sub`` too)."""
    if isinstance(stmt, ast.Import):
        return [alias.name for alias in stmt.names]
    if not isinstance(stmt, ast.ImportFrom):
        return []
    base = stmt.module or ""
    if stmt.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (stmt.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in stmt.names]


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        body = ast.parse(path.read_text(encoding="utf-8")).body
        targets = {t for stmt in _module_level(body) for t in _targets(stmt, module, path.name == "__init__.py")}
        graph[module] = {t for t in targets if t in MODULES and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the modules along it (first = last), or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = "done", stack.pop()
        return None

    return next((cycle for node in sorted(graph) if node not in state and (cycle := visit(node))), None)


def test_the_graph_sees_module_level_imports_only():
    graph = import_graph()
    assert "clgrid.config.errors" in graph["clgrid.config.grid"]  # from clgrid.config.errors import ...
    assert "clgrid.config.grid" in graph["clgrid.config"]  # a package's __init__ re-exporting its modules
    assert "clgrid.config" in graph["clgrid.resources"]  # from .config import ... (relative)
    assert "clgrid.config.checks.runs" in graph["clgrid.config.validation"]  # from clgrid.config.checks import runs


def test_a_cycle_is_found_and_shown():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_clgrid_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_config_layer_has_a_leaf_and_a_top():
    # errors imports nothing of the config layer; only validation (and the package's __init__, which re-exports
    # it) imports the checks; the grid and the sweeps import no check.
    graph = import_graph()
    layer = {m for m in graph if m.startswith("clgrid.config.")}
    checks = {m for m in layer if m.startswith("clgrid.config.checks")}
    assert not graph["clgrid.config.errors"] & (layer | {"clgrid.config"})
    assert not (graph["clgrid.config.grid"] | graph["clgrid.config.sweeps"]) & (checks | {"clgrid.config.validation"})
    assert [m for m in layer - checks if graph[m] & checks] == ["clgrid.config.validation"]
    assert "clgrid.config.validation" not in {t for m in layer for t in graph[m]}


def test_the_entry_points_are_found_in_the_package():
    # The Snakefile names config.check and config.ConfigError, the tests config.check_config.
    from clgrid import config
    from clgrid.config import errors, validation

    assert config.check is validation.check and config.check_config is validation.check_config
    assert config.ConfigError is errors.ConfigError
    with pytest.raises(AttributeError):
        config.no_such_name  # noqa: B018


def test_every_module_is_found_by_the_walk():
    # A module the walk missed would escape the cycle check; each one's file is the one Python imports.
    for name in ("clgrid.config", "clgrid.catalog.archs", "clgrid.data.datasets", "clgrid.plots.tables"):
        assert MODULES[name] == Path(importlib.util.find_spec(name).origin)
