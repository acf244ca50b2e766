"""MkDocs hook: generate the config reference, the methods page and the package layout at build time (mkdocs.yml `hooks:`).

The pages are added to the build in memory (`File.generated`), never written into docs/, so they cannot go stale
in git and `mkdocs serve` does not loop on its own output. To look at them without building the site:

    python docs/gen/hooks.py OUT_DIR      # writes OUT_DIR/reference/config.md and OUT_DIR/methods.md
"""

from __future__ import annotations

import sys
from pathlib import Path

GEN = Path(__file__).resolve().parent
REPO = GEN.parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
# The docs describe the checkout being built, whatever clgrid the environment has installed.
for path in (str(REPO / "src"), str(GEN)):
    if path not in sys.path:
        sys.path.insert(0, path)

from config_reference import render_config_reference  # noqa: E402
from methods_page import render_methods_page  # noqa: E402
from package_tree import render_package_page  # noqa: E402


def generated_pages() -> dict[str, str]:
    """Page path (relative to docs/) -> Markdown, for every generated page."""
    from clgrid.config.schema import load_schema

    # load_schema, not a plain YAML read: keys the code adds to the schema when loading it are documented too.
    schema = load_schema(str(SCHEMA))
    return {
        "reference/config.md": render_config_reference(schema),
        "methods.md": render_methods_page(schema, GEN / "methods_intro.md"),
        "reference/package.md": render_package_page(REPO / "src" / "clgrid"),
    }


def on_files(files, config):
    from mkdocs.structure.files import File

    for src_uri, content in generated_pages().items():
        files.append(File.generated(config, src_uri, content=content))
    return files


def main(out_dir: str) -> None:
    for src_uri, content in generated_pages().items():
        target = Path(out_dir) / src_uri
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "site-pages")
