"""Tidy tables of every run, and mean ± spread over seeds as Markdown and LaTeX (booktabs).

The summary's spread is the 95% Student-t interval's half-width or the sample std, and its marks say which method
is best per benchmark × backbone × metric and which cannot be told apart from it (paired tests on shared seeds,
Holm-corrected): the config's ``tables:`` block (``comparisons.TableStats``). per_seed.* shows every seed's number,
comparisons.* every test.

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
from clgrid.plots.tables.comparisons import (TableStats, compare_methods, comparisons_markdown, marks_of,
                                             per_seed_markdown, per_seed_table)
from clgrid.plots.tables.formatting import to_latex, to_markdown
from clgrid.plots.tables.published import published_comparison, published_latex, published_markdown
from clgrid.plots.tables.summary import collect, flatten, read_summary, selected_note, summarise

__all__ = ["TableStats", "collect", "compare_methods", "flatten", "per_seed_table", "published_comparison",
           "published_latex", "published_markdown", "read_summary", "summarise", "to_latex", "to_markdown",
           "write_paper_tables", "write_published_tables", "write_tables"]

TABLE_FILES = ("runs.csv", "acc_matrix.csv", "summary.csv", "summary.md", "summary.tex", "per_seed.csv",
               "per_seed.md", "comparisons.csv", "comparisons.md")


def write_tables(metrics_files: list[str], out_dir: str, stats: dict | None = None) -> dict[str, Path]:
    """Write runs.csv, acc_matrix.csv, summary.csv/.md/.tex, per_seed.csv/.md and comparisons.csv/.md into
    ``out_dir``; ``stats`` is the config's ``tables:`` block (absent keys: the schema's defaults)."""
    settings = TableStats.of(stats)
    runs, cells = collect(metrics_files)
    summary = summarise(runs)
    comparisons = compare_methods(runs, settings)
    marks = marks_of(comparisons)
    per_seed = per_seed_table(runs)
    out = Path(out_dir)
    paths = {name: out / name for name in TABLE_FILES}
    for name, frame in (("runs.csv", runs), ("acc_matrix.csv", cells), ("summary.csv", flatten(summary)),
                        ("per_seed.csv", per_seed), ("comparisons.csv", comparisons)):
        with atomic_path(paths[name]) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    texts = {"summary.md": to_markdown(summary, stats=settings, marks=marks) + selected_note(runs),
             "summary.tex": to_latex(summary, stats=settings, marks=marks),
             "per_seed.md": per_seed_markdown(per_seed, runs),
             "comparisons.md": comparisons_markdown(comparisons, settings)}
    for name, text in texts.items():
        with atomic_path(paths[name]) as tmp:
            tmp.write_text(text)
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
