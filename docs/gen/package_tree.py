"""The package layout page, generated from the source: one line per module with its size and what it holds (the
first line of its docstring), so the layout the docs show is always the code's."""

from __future__ import annotations

import ast
from pathlib import Path


def module_rows(package: Path) -> list[tuple[str, int, str]]:
    """(path relative to the package's parent, lines, the docstring's first line) of every module, in tree order."""
    rows = []
    for path in sorted(package.rglob("*.py"), key=lambda p: (p.parent.relative_to(package).parts, p.name != "__init__.py", p.name)):
        text = path.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text)) or ""
        rows.append((str(path.relative_to(package.parent)), len(text.splitlines()), doc.strip().split("\n")[0]))
    return rows


def escape_pipes(text: str) -> str:
    return text.replace("|", r"\|")


def render_package_page(package: Path) -> str:
    rows = module_rows(package)
    lines = ["# The package, module by module", "",
             "Generated from `src/clgrid` when the docs are built: each module, its length in lines and the first line "
             "of its docstring (what it holds). How the parts fit together: [Architecture](../architecture.md).", "",
             "| module | lines | what it holds |", "|---|---:|---|"]
    lines += [f"| `{name}` | {n} | {escape_pipes(doc)} |" for name, n, doc in rows]
    largest = sorted(rows, key=lambda row: -row[1])[:5]
    lines += ["", f"{len(rows)} modules, {sum(n for _, n, _ in rows):,} lines. The five largest: "
              + ", ".join(f"`{name}` ({n})" for name, n, _ in largest) + "."]
    return "\n".join(lines) + "\n"
