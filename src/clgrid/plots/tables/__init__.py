"""Tidy tables of every run, and mean ± std over seeds as Markdown and LaTeX (booktabs).

Every metric a run's metrics.json holds gets a column, in ``METRIC_ORDER`` then any
``acc_<setname>`` (evaluation-only test sets) sorted; a benchmark's table drops the
columns none of its runs measured. ``published_comparison`` puts the numbers of a
paper beside ours and marks the cells further off than a tolerance. A run recorded as
diverged (``train.on_divergence: record``) is never averaged in: its cells read
"diverged", or "diverged (k/n seeds)" when k of a method's n seeds diverged.
"""

from __future__ import annotations

from pathlib import Path

from clgrid.io import atomic_path
from clgrid.plots.tables.formatting import to_latex, to_markdown
from clgrid.plots.tables.published import published_comparison, published_latex, published_markdown
from clgrid.plots.tables.summary import collect, flatten, read_summary, summarise

__all__ = ["collect", "flatten", "published_comparison", "published_latex", "published_markdown", "read_summary",
           "summarise", "to_latex", "to_markdown", "write_paper_tables", "write_published_tables", "write_tables"]


def write_tables(metrics_files: list[str], out_dir: str) -> dict[str, Path]:
    """Write runs.csv, acc_matrix.csv, summary.csv, summary.md and summary.tex into ``out_dir``."""
    runs, cells = collect(metrics_files)
    summary = summarise(runs)
    out = Path(out_dir)
    paths = {name: out / name for name in ("runs.csv", "acc_matrix.csv", "summary.csv", "summary.md", "summary.tex")}
    for name, frame in (("runs.csv", runs), ("acc_matrix.csv", cells), ("summary.csv", flatten(summary))):
        with atomic_path(paths[name]) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(paths["summary.md"]) as tmp:
        tmp.write_text(to_markdown(summary))
    with atomic_path(paths["summary.tex"]) as tmp:
        tmp.write_text(to_latex(summary))
    return paths


def write_paper_tables(summary_csv: str, out_dir: str) -> list[Path]:
    """LaTeX (booktabs) and Markdown tables with the best mean per column in bold, from summary.csv."""
    summary = read_summary(summary_csv)
    out = Path(out_dir)
    paths = [out / "tables.md", out / "tables.tex"]
    with atomic_path(paths[0]) as tmp:
        tmp.write_text(to_markdown(summary, bold_best=True))
    with atomic_path(paths[1]) as tmp:
        tmp.write_text("% needs \\usepackage{booktabs}\n" + to_latex(summary, bold_best=True))
    return paths



def write_published_tables(summary_csv: str, published: dict, out_dir: str) -> list[Path]:
    """published.csv (tidy), published.md and published.tex: our summary.csv beside a paper's numbers."""
    comparison = published_comparison(read_summary(summary_csv), published)
    out = Path(out_dir)
    paths = [out / "published.csv", out / "published.md", out / "published.tex"]
    with atomic_path(paths[0]) as tmp:
        comparison.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(published_markdown(comparison, published))
    with atomic_path(paths[2]) as tmp:
        tmp.write_text(published_latex(comparison, published))
    return paths
