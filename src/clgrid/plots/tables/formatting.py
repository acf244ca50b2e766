"""Summary frames as text: mean ± std cells, the best mean in bold, the notes, Markdown and booktabs LaTeX."""

from __future__ import annotations

import pandas as pd

from clgrid.plots.tables.summary import METRIC_ORDER, TASK_IL, higher_is_better, metric_label, summary_metrics

BOLD = {"md": "**{}**", "tex": "\\textbf{{{}}}"}
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


def formatted(summary: pd.DataFrame, benchmark: str, plus_minus: str = "±", bold: str | None = None) -> pd.DataFrame:
    """One benchmark's rows as strings 'mean ± std', columns labelled for a paper.

    Columns that are NaN for every run of the benchmark are left out. With ``bold`` ('md' or
    'tex') the best mean of each column (rounded as shown) is set in bold.
    """
    part = summary[summary["benchmark"] == benchmark]
    table = pd.DataFrame({"Backbone": part["backbone"].astype(str), "Method": part["method"].astype(str)})
    metrics = _measured(part, summary_metrics(summary))
    task_il_shown = any(key.endswith(TASK_IL) for key in metrics)
    diverged, seeds = _diverged(part), part[("seeds", "n")].astype(int)
    for key in metrics:
        means = part[(key, "mean")].where(diverged == 0).round(1)  # a method with a diverged seed is never best
        best = means.max() if higher_is_better(key) else means.min()
        cells = []
        for m, s, r, d, n in zip(part[(key, "mean")], part[(key, "std")], means, diverged, seeds):
            text = diverged_cell(d, n) if d else mean_std_cell(m, s, plus_minus)
            cells.append(BOLD[bold].format(text) if bold and not d and r == best else text)
        table[metric_label(key, task_il_shown)] = cells
    table["Seeds"] = part[("seeds", "n")].astype(int).to_numpy()
    if table["Backbone"].nunique() == 1:
        table = table.drop(columns="Backbone")
    return table.reset_index(drop=True)


NOTE = ("Accuracies in %, mean ± sample std over seeds. ACC: final average accuracy; Forgetting: Chaudhry et al. 2018; "
        "BWT/FWT: Lopez-Paz & Ranzato 2017.")


def _note(metrics: list[str], any_diverged: bool = False) -> str:
    """``NOTE``, plus a sentence for each kind of extra metric the tables show."""
    note = NOTE
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


def to_markdown(summary: pd.DataFrame, bold_best: bool = False) -> str:
    parts = []
    for bench in summary["benchmark"].cat.categories:
        table = formatted(summary, bench, bold="md" if bold_best else None)
        parts.append(f"### {bench}\n\n{table.to_markdown(index=False)}\n")
    note = _note(summary_metrics(summary), bool(_diverged(summary).any()))
    note += " Best mean per column in bold." if bold_best else ""
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


def to_latex(summary: pd.DataFrame, bold_best: bool = False) -> str:
    parts = []
    note = _note(summary_metrics(summary), bool(_diverged(summary).any()))
    for bench in summary["benchmark"].cat.categories:
        table = formatted(summary, bench, plus_minus=r"$\pm$", bold="tex" if bold_best else None)
        caption = f"% {bench}: {note}\n"
        parts.append(caption + "\\begin{table}[t]\n\\centering\n\\caption{" + tex_escape(bench) + "}\n"
                     + booktabs(table) + "\\end{table}\n")
    return "\n".join(parts)
