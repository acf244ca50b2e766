"""Tidy tables of every run, and mean ± std over seeds as Markdown and LaTeX (booktabs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clgrid.io import atomic_path, read_json

METRIC_LABELS = {
    "acc": "ACC",
    "avg_inc_acc": "Avg. inc. ACC",
    "forgetting": "Forgetting",
    "bwt": "BWT",
    "fwt": "FWT",
}
KEYS = ["benchmark", "backbone", "method"]


def collect(metrics_files: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per run (scalar metrics) and one row per accuracy-matrix cell, in input order."""
    run_rows, cell_rows = [], []
    for path in metrics_files:
        m = read_json(path)
        ident = {k: m[k] for k in (*KEYS, "seed")}
        prov = m["provenance"]
        run_rows.append({**ident, **m["metrics"], "n_tasks": len(m["acc_matrix"]),
                         "config_hash": prov["config_hash"], "git_commit": prov["git_commit"], "device": prov["device"]})
        for t, row in enumerate(m["acc_matrix"]):
            for i, acc in enumerate(row):
                cell_rows.append({**ident, "after_task": t, "task": i, "acc": acc})
    return pd.DataFrame(run_rows), pd.DataFrame(cell_rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and seed count of each metric per benchmark × backbone × method."""
    order = {k: list(dict.fromkeys(runs[k])) for k in KEYS}
    grouped = runs.groupby(KEYS, sort=False)[list(METRIC_LABELS)]
    out = grouped.agg(["mean", "std"])
    out[("seeds", "n")] = runs.groupby(KEYS, sort=False)["seed"].count()
    out = out.reset_index()
    for k in KEYS:
        out[k] = pd.Categorical(out[k], categories=order[k], ordered=True)
    return out.sort_values(KEYS).reset_index(drop=True)


# Which direction is better, for bolding the best mean of each column.
HIGHER_IS_BETTER = {"acc": True, "avg_inc_acc": True, "forgetting": False, "bwt": True, "fwt": True}
BOLD = {"md": "**{}**", "tex": "\\textbf{{{}}}"}


def _cell(mean: float, std: float, plus_minus: str) -> str:
    return f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} {plus_minus} {std:.1f}"


def formatted(summary: pd.DataFrame, benchmark: str, plus_minus: str = "±", bold: str | None = None) -> pd.DataFrame:
    """One benchmark's rows as strings 'mean ± std', columns labelled for a paper.

    With ``bold`` ('md' or 'tex') the best mean of each column (rounded as shown) is set in bold.
    """
    part = summary[summary["benchmark"] == benchmark]
    table = pd.DataFrame({"Backbone": part["backbone"].astype(str), "Method": part["method"].astype(str)})
    for key, label in METRIC_LABELS.items():
        means = part[(key, "mean")].round(1)
        best = means.max() if HIGHER_IS_BETTER[key] else means.min()
        cells = []
        for m, s, r in zip(part[(key, "mean")], part[(key, "std")], means):
            text = _cell(m, s, plus_minus)
            cells.append(BOLD[bold].format(text) if bold and r == best else text)
        table[label] = cells
    table["Seeds"] = part[("seeds", "n")].astype(int).to_numpy()
    if table["Backbone"].nunique() == 1:
        table = table.drop(columns="Backbone")
    return table.reset_index(drop=True)


NOTE = ("Accuracies in %, mean ± sample std over seeds. ACC: final average accuracy; Forgetting: Chaudhry et al. 2018; "
        "BWT/FWT: Lopez-Paz & Ranzato 2017.")


def to_markdown(summary: pd.DataFrame, bold_best: bool = False) -> str:
    parts = []
    for bench in summary["benchmark"].cat.categories:
        table = formatted(summary, bench, bold="md" if bold_best else None)
        parts.append(f"### {bench}\n\n{table.to_markdown(index=False)}\n")
    note = NOTE + (" Best mean per column in bold." if bold_best else "")
    return "\n".join(parts) + f"\n{note}\n"


def to_latex(summary: pd.DataFrame, bold_best: bool = False) -> str:
    parts = []
    for bench in summary["benchmark"].cat.categories:
        table = formatted(summary, bench, plus_minus=r"$\pm$", bold="tex" if bold_best else None)
        for col in ("Method", "Backbone"):
            if col in table:
                table[col] = table[col].str.replace("_", r"\_")
        body = table.style.hide(axis="index").to_latex(hrules=True, column_format="l" * (table.shape[1]))
        caption = f"% {bench}: {NOTE}\n"
        parts.append(caption + "\\begin{table}[t]\n\\centering\n\\caption{" + bench.replace("_", r"\_") + "}\n"
                     + body + "\\end{table}\n")
    return "\n".join(parts)


def write_tables(metrics_files: list[str], out_dir: str) -> dict[str, Path]:
    """Write runs.csv, acc_matrix.csv, summary.csv, summary.md and summary.tex into ``out_dir``."""
    runs, cells = collect(metrics_files)
    summary = summarise(runs)
    out = Path(out_dir)
    paths = {name: out / name for name in ("runs.csv", "acc_matrix.csv", "summary.csv", "summary.md", "summary.tex")}
    flat = summary.copy()
    flat.columns = [a if not b else f"{a}_{b}" for a, b in flat.columns]
    for name, frame in (("runs.csv", runs), ("acc_matrix.csv", cells), ("summary.csv", flat)):
        with atomic_path(paths[name]) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(paths["summary.md"]) as tmp:
        tmp.write_text(to_markdown(summary))
    with atomic_path(paths["summary.tex"]) as tmp:
        tmp.write_text(to_latex(summary))
    return paths


def write_paper_tables(summary_csv: str, out_dir: str) -> list[Path]:
    """LaTeX (booktabs) and Markdown tables with the best mean per column in bold, from summary.csv."""
    flat = pd.read_csv(summary_csv)
    summary = flat.copy()
    summary.columns = pd.MultiIndex.from_tuples(
        [tuple(c.rsplit("_", 1)) if c.rsplit("_", 1)[-1] in ("mean", "std", "n") else (c, "") for c in flat.columns]
    )
    for k in KEYS:
        summary[k] = pd.Categorical(flat[k], categories=list(dict.fromkeys(flat[k])), ordered=True)
    out = Path(out_dir)
    paths = [out / "tables.md", out / "tables.tex"]
    with atomic_path(paths[0]) as tmp:
        tmp.write_text(to_markdown(summary, bold_best=True))
    with atomic_path(paths[1]) as tmp:
        tmp.write_text("% needs \\usepackage{booktabs}\n" + to_latex(summary, bold_best=True))
    return paths
