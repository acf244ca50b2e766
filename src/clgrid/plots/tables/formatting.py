"""Summary frames as text: mean ± spread cells, the best mean in bold (and, with tests, ≈ beside the methods not
significantly different from it), the notes, Markdown and booktabs LaTeX."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import pandas as pd

from clgrid.plots.tables.summary import METRIC_ORDER, TASK_IL, higher_is_better, metric_label, summary_metrics

if TYPE_CHECKING:
    from clgrid.plots.tables.comparisons import TableStats

BOLD = {"md": "**{}**", "tex": "\\textbf{{{}}}"}
TIED = {"md": " ≈", "tex": " $\\approx$"}
"""After the cell of a method not significantly different from its column's best."""
MISSING = "–"
DIVERGED = "diverged"


def mean_std_cell(mean: float, std: float, plus_minus: str) -> str:
    if pd.isna(mean):
        return MISSING
    return f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} {plus_minus} {std:.1f}"


def diverged_cell(n_diverged: int, n_seeds: int) -> str:
    """What a cell of a method with diverged seeds says instead of a mean: which share of its seeds diverged."""
    return DIVERGED if n_seeds <= 1 else f"{DIVERGED} ({n_diverged}/{n_seeds} seeds)"


def _diverged(part: pd.DataFrame) -> pd.Series:
    """Seeds that diverged per row of a summary (0 for summaries written before divergence was recorded)."""
    if ("diverged", "n") in part.columns:
        return part[("diverged", "n")].fillna(0).astype(int)
    return pd.Series(0, index=part.index)


def _measured(part: pd.DataFrame, metrics: list[str]) -> list[str]:
    """The metrics with at least one mean in ``part``: a benchmark's table shows only those (and ACC, where a run
    diverged, so its row says so even if no seed of the benchmark finished)."""
    measured = [key for key in metrics if part[(key, "mean")].notna().any()]
    if "acc" in metrics and "acc" not in measured and _diverged(part).any():
        measured.insert(0, "acc")
    return measured


def formatted(summary: pd.DataFrame, benchmark: str, plus_minus: str = "±", bold: str | None = None,
              spread: str = "std", marks: Mapping[tuple[str, str, str, str], str] | None = None) -> pd.DataFrame:
    """One benchmark's rows as strings 'mean ± spread' (``spread``: 'std' or 'ci95'), columns labelled for a paper.

    Columns that are NaN for every run of the benchmark are left out. With ``bold`` ('md' or
    'tex') the best mean of each column (rounded as shown) is set in bold. With ``marks``
    ((benchmark, backbone, method, metric) -> verdict, from ``comparisons.marks_of``) and ``bold`` instead, the
    best of each benchmark × backbone × metric is bold and a method not significantly different from it gets ≈.
    """
    from clgrid.plots.tables.comparisons import BEST, NOT_DIFFERENT

    part = summary[summary["benchmark"] == benchmark]
    table = pd.DataFrame({"Backbone": part["backbone"].astype(str), "Method": part["method"].astype(str)})
    metrics = _measured(part, summary_metrics(summary))
    task_il_shown = any(key.endswith(TASK_IL) for key in metrics)
    diverged, seeds = _diverged(part), part[("seeds", "n")].astype(int)
    for key in metrics:
        means = part[(key, "mean")].where(diverged == 0).round(1)  # a method with a diverged seed is never best
        best = means.max() if higher_is_better(key) else means.min()
        cells = []
        for m, s, r, d, n, backbone, method in zip(part[(key, "mean")], part[(key, spread)], means, diverged, seeds,
                                                  part["backbone"].astype(str), part["method"].astype(str)):
            text = diverged_cell(d, n) if d else mean_std_cell(m, s, plus_minus)
            verdict = marks.get((benchmark, backbone, method, key)) if marks is not None and bold and not d else None
            if verdict == BEST or (marks is None and bold and not d and r == best):
                text = BOLD[bold].format(text)
            elif verdict == NOT_DIFFERENT:
                text += TIED[bold]
            cells.append(text)
        table[metric_label(key, task_il_shown)] = cells
    table["Seeds"] = part[("seeds", "n")].astype(int).to_numpy()
    if table["Backbone"].nunique() == 1:
        table = table.drop(columns="Backbone")
    return table.reset_index(drop=True)


SPREAD_NOTE = {"std": "Accuracies in %, mean ± sample std over seeds.",
               "ci95": "Accuracies in %, mean ± half-width of its 95% confidence interval over seeds (Student t with "
                       "n − 1 degrees of freedom, n the Seeds column; no ± with one seed)."}
DEFINITIONS = "ACC: final average accuracy; Forgetting: Chaudhry et al. 2018; BWT/FWT: Lopez-Paz & Ranzato 2017."
NOTE = f"{SPREAD_NOTE['std']} {DEFINITIONS}"


def _marks_sentence(stats: "TableStats", n_max: int) -> str:
    from clgrid.plots.tables.comparisons import basis_sentence

    if stats.test == "none":
        return " Bold: the best mean of its column for that backbone (each one, on a tie). " + basis_sentence(stats, n_max)
    return (" Bold: the best mean of its column for that backbone (each one, on a tie); ≈: not significantly different from it ("
            + basis_sentence(stats, n_max) + "); no mark: significantly different, or not tested (fewer than two "
            "shared seeds). Every p-value: comparisons.md.")


def _note(metrics: list[str], any_diverged: bool = False, stats: "TableStats | None" = None, n_max: int = 0) -> str:
    """``NOTE`` (``NOTE_CI`` and what the marks mean, with ``stats``), plus a sentence for each kind of extra metric
    the tables show."""
    note = NOTE
    if stats is not None:
        note = f"{SPREAD_NOTE[stats.spread]} {DEFINITIONS}" + _marks_sentence(stats, n_max)
    if any_diverged:
        note += (" diverged (k/n seeds): training of k of the method's n seeds hit a non-finite loss "
                 "(train.on_divergence: record); no mean is shown for it.")
    if any(key.endswith(TASK_IL) for key in metrics):
        note += (" Class-IL: prediction over every class seen; task-IL: logits masked to the classes of the "
                 "evaluated task.")
    if "unseen_acc" in metrics or "unseen_drop" in metrics:
        note += " Unseen ACC: accuracy on the holdout never trained on; Unseen drop: its drop (lower is better)."
    if any(k.startswith("p_at_1_") for k in metrics):
        note += (" Retrieval (k-NN on embeddings; a classifier's backbone features): P@1 = precision@1, R@8 = recall@8,"
                 " MAP@R (Musgrave et al. 2020), NMI of a k-means clustering; unseen: held-out classes added to the"
                 " index without training; P@1 drop = seen - unseen (lower is better).")
    if any(key.startswith("acc_") and key not in METRIC_ORDER for key in metrics):
        note += " ACC on <set>: final model on an evaluation-only test set."
    return note


def _seeds_max(summary: pd.DataFrame) -> int:
    return int(summary[("seeds", "n")].max()) if len(summary) else 0


def to_markdown(summary: pd.DataFrame, bold_best: bool = False, stats: "TableStats | None" = None,
                marks: Mapping[tuple[str, str, str, str], str] | None = None) -> str:
    """The summary as Markdown, a table per benchmark. Without ``stats``: mean ± sample std (the paper tables);
    with ``stats`` (the config's ``tables:``) and ``marks`` (``comparisons.marks_of``): its spread, and the best and
    those not significantly different from it marked."""
    parts = []
    spread = stats.spread if stats is not None else "std"
    for bench in summary["benchmark"].cat.categories:
        table = formatted(summary, bench, bold="md" if bold_best or marks is not None else None, spread=spread,
                          marks=marks)
        parts.append(f"### {bench}\n\n{table.to_markdown(index=False)}\n")
    note = _note(summary_metrics(summary), bool(_diverged(summary).any()), stats, _seeds_max(summary))
    note += " Best mean per column in bold." if bold_best and marks is None else ""
    return "\n".join(parts) + f"\n{note}\n"


TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """Plain text (names, sources) safe to set in LaTeX."""
    return "".join(TEX_SPECIAL.get(ch, ch) for ch in str(text))


def booktabs(table: pd.DataFrame) -> str:
    """A table of already-formatted cells as a booktabs tabular; names and headers escaped."""
    table = table.replace(MISSING, "--")  # an en dash as LaTeX ligature, for any input encoding
    for col in ("Method", "Backbone"):
        if col in table:
            table[col] = table[col].map(tex_escape)
    table.columns = [tex_escape(c) for c in table.columns]
    return table.style.hide(axis="index").to_latex(hrules=True, column_format="l" * table.shape[1])


def to_latex(summary: pd.DataFrame, bold_best: bool = False, stats: "TableStats | None" = None,
             marks: Mapping[tuple[str, str, str, str], str] | None = None) -> str:
    """The summary as booktabs LaTeX, a table per benchmark; ``stats`` and ``marks`` as in ``to_markdown``."""
    parts = []
    note = _note(summary_metrics(summary), bool(_diverged(summary).any()), stats, _seeds_max(summary))
    spread = stats.spread if stats is not None else "std"
    for bench in summary["benchmark"].cat.categories:
        table = formatted(summary, bench, plus_minus=r"$\pm$", bold="tex" if bold_best or marks is not None else None,
                          spread=spread, marks=marks)
        caption = f"% {bench}: {note}\n"
        parts.append(caption + "\\begin{table}[t]\n\\centering\n\\caption{" + tex_escape(bench) + "}\n"
                     + booktabs(table) + "\\end{table}\n")
    return "\n".join(parts)
