"""Tidy tables of every run, and mean ± std over seeds as Markdown and LaTeX (booktabs).

Every metric a run's metrics.json holds gets a column, in ``METRIC_ORDER`` then any
``acc_<setname>`` (evaluation-only test sets) sorted; a benchmark's table drops the
columns none of its runs measured. ``published_comparison`` puts the numbers of a
paper beside ours and marks the cells further off than a tolerance. A run recorded as
diverged (``train.on_divergence: record``) is never averaged in: its cells read
"diverged", or "diverged (k/n seeds)" when k of a method's n seeds diverged.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from clgrid.catalog import metrics as metric_catalog
from clgrid.io import atomic_path, read_json

KEYS = ["benchmark", "backbone", "method"]

# Column order, labels and directions of every metric: clgrid.catalog.metrics (acc_<setname> keys follow, sorted).
METRIC_ORDER = list(metric_catalog.METRICS)
METRIC_LABELS = {name: metric.label for name, metric in metric_catalog.METRICS.items()}
TASK_IL = metric_catalog.TASK_IL
# Metrics that exist in a class-IL and a task-IL flavour: labelled "(class-IL)"/"(task-IL)" when both are shown.
SCENARIO_METRICS = tuple(name for name in metric_catalog.METRICS if metric_catalog.has_task_il(name))
BOLD = {"md": "**{}**", "tex": "\\textbf{{{}}}"}
MISSING = "–"
DIVERGED = "diverged"


def is_metric(key: str) -> bool:
    """True for a metric this module tabulates: one of ``METRIC_ORDER`` or ``acc_<setname>``."""
    return key in METRIC_ORDER or metric_catalog.is_extra_set(key)


def ordered_metrics(keys) -> list[str]:
    """The metrics among ``keys`` in table order: ``METRIC_ORDER``, then ``acc_<setname>`` sorted."""
    keys = set(keys)
    fixed = [k for k in METRIC_ORDER if k in keys]
    return fixed + sorted(k for k in keys if k not in METRIC_ORDER and is_metric(k))


def higher_is_better(key: str) -> bool:
    return metric_catalog.higher_is_better(key)


def metric_label(key: str, task_il_shown: bool = False) -> str:
    """Column label of a metric; class-IL and task-IL are told apart when ``task_il_shown``."""
    if key.endswith(TASK_IL) and key[: -len(TASK_IL)] in SCENARIO_METRICS:
        return f"{METRIC_LABELS[key[: -len(TASK_IL)]]} (task-IL)"
    if key in SCENARIO_METRICS and task_il_shown:
        return f"{METRIC_LABELS[key]} (class-IL)"
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    if key.startswith("acc_"):
        return f"ACC on {key[len('acc_'):]}"
    return key


def collect(metrics_files: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per run (scalar metrics) and one row per accuracy-matrix cell, in input order."""
    run_rows, cell_rows = [], []
    for path in metrics_files:
        m = read_json(path)
        ident = {k: m[k] for k in (*KEYS, "seed")}
        prov = m["provenance"]
        run_rows.append({**ident, **m["metrics"], "n_tasks": len(m["acc_matrix"]),
                         "diverged_task": m["diverged_at"]["task"] if m.get("diverged") else None,
                         "config_hash": prov["config_hash"], "git_commit": prov["git_commit"], "device": prov["device"]})
        for t, row in enumerate(m["acc_matrix"]):
            for i, acc in enumerate(row):
                cell_rows.append({**ident, "after_task": t, "task": i, "acc": acc})
    return pd.DataFrame(run_rows), pd.DataFrame(cell_rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and seed count of each metric per benchmark × backbone × method, and how many of
    those seeds diverged (``diverged_task`` set; their metrics are NaN, so the mean is of the others).

    Every metric present in any run gets columns; runs that lack it (another benchmark) count as NaN.
    """
    order = {k: list(dict.fromkeys(runs[k])) for k in KEYS}
    metrics = ordered_metrics(runs.columns)
    values = runs[KEYS].join(runs[metrics].apply(pd.to_numeric, errors="coerce").astype(float))
    out = values.groupby(KEYS, sort=False)[metrics].agg(["mean", "std"])
    out[("seeds", "n")] = runs.groupby(KEYS, sort=False)["seed"].count()
    if "diverged_task" in runs:
        out[("diverged", "n")] = runs.groupby(KEYS, sort=False)["diverged_task"].count()
    out = out.reset_index()
    for k in KEYS:
        out[k] = pd.Categorical(out[k], categories=order[k], ordered=True)
    return out.sort_values(KEYS).reset_index(drop=True)


def summary_metrics(summary: pd.DataFrame) -> list[str]:
    """The metrics a summary has columns for, in table order."""
    return ordered_metrics(c[0] for c in summary.columns if c[1] == "mean")


def flatten(summary: pd.DataFrame) -> pd.DataFrame:
    """Summary columns as in summary.csv: ``acc_mean``, ``acc_task_il_std``, ``seeds_n``."""
    flat = summary.copy()
    flat.columns = [a if not b else f"{a}_{b}" for a, b in flat.columns]
    return flat


def unflatten(flat: pd.DataFrame) -> pd.DataFrame:
    """Inverse of ``flatten``: the (metric, statistic) columns and ordered categorical keys back.

    Only the last underscore separates a statistic (mean, std, n), so ``acc_task_il_mean`` is
    (``acc_task_il``, ``mean``).
    """
    columns = []
    for c in flat.columns:
        head, _, tail = c.rpartition("_")
        columns.append((head, tail) if c not in KEYS and head and tail in ("mean", "std", "n") else (c, ""))
    summary = flat.copy()
    summary.columns = pd.MultiIndex.from_tuples(columns)
    for k in KEYS:
        summary[k] = pd.Categorical(flat[k].astype(str), categories=list(dict.fromkeys(flat[k].astype(str))),
                                    ordered=True)
    return summary


def read_summary(summary_csv: str) -> pd.DataFrame:
    """summary.csv from ``write_tables``, as the summary ``summarise`` returned."""
    return unflatten(pd.read_csv(summary_csv))


def _cell(mean: float, std: float, plus_minus: str) -> str:
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
            text = diverged_cell(d, n) if d else _cell(m, s, plus_minus)
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


def _booktabs(table: pd.DataFrame) -> str:
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
                     + _booktabs(table) + "\\end{table}\n")
    return "\n".join(parts)


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


# ---------------------------------------------------------------------------------------------------------------
# Published numbers beside ours

COMPARISON_COLUMNS = ["benchmark", "backbone", "method", "metric", "ours_mean", "ours_std", "n_seeds", "published",
                      "delta", "off", "status", "source"]
# status of a comparison row: within tolerance, further off, a published run our grid lacks, or a run
# we have that does not report this metric (another scenario type).
WITHIN, OFF, NOT_RUN, NOT_MEASURED = "within", "off", "not run", "not measured"
# ... or "diverged (k/n seeds)": k of our seeds diverged, so there is no mean to compare.
MARK = {"md": " ⚠", "tex": "$^\\dagger$"}


def _tolerance(published: dict) -> float:
    try:
        tolerance = float(published["tolerance"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"published.tolerance must be a number of percentage points, got "
                         f"{published.get('tolerance')!r}; set e.g. 'tolerance: 5.0' under published:") from None
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"published.tolerance must be a finite number >= 0, got {tolerance}")
    return tolerance


def published_comparison(summary: pd.DataFrame, published: dict) -> pd.DataFrame:
    """One row per (benchmark, our backbone, run, metric) of ``published['numbers']``: ours, theirs, delta.

    ``delta = ours_mean - published``; ``off`` is ``|delta| > tolerance``. A published run missing
    from ``summary`` gets one row with NaN ours and status 'not run'; a run we have without that
    metric gets 'not measured'. ``summary`` is what ``summarise`` or ``read_summary`` returns
    (flattened summary.csv columns are accepted too). Rows follow the grid's method order, then runs of
    ``numbers`` that are not in the grid, in their order.
    """
    if not isinstance(summary.columns, pd.MultiIndex):
        summary = unflatten(summary)
    tolerance = _tolerance(published)
    source = published.get("source", "")
    bench_col = summary["benchmark"].astype(str)
    method_col = summary["method"].astype(str)
    grid_order = list(dict.fromkeys(method_col))
    rows = []
    for bench, runs in published.get("numbers", {}).items():
        # Runs of our grid in the grid's order (the rule hands the block over as sorted JSON), then the others.
        ordered = [r for r in grid_order if r in runs] + [r for r in runs if r not in grid_order]
        for run in ordered:
            values = runs[run]
            ours = summary[(bench_col == str(bench)) & (method_col == str(run))]
            for metric, value in values.items():
                base = {"benchmark": bench, "metric": metric, "published": float(value), "source": source}
                if ours.empty:
                    rows.append({**base, "backbone": None, "method": run, "ours_mean": math.nan,
                                 "ours_std": math.nan, "n_seeds": pd.NA, "status": NOT_RUN})
                    continue
                for _, row in ours.iterrows():
                    mean = row.get((metric, "mean"), math.nan)
                    std = row.get((metric, "std"), math.nan)
                    n_diverged = row.get(("diverged", "n"), 0)
                    n_diverged = 0 if pd.isna(n_diverged) else int(n_diverged)
                    status = NOT_MEASURED if pd.isna(mean) else None
                    if n_diverged:
                        mean = std = math.nan
                        status = diverged_cell(n_diverged, int(row[("seeds", "n")]))
                    rows.append({**base, "backbone": str(row[("backbone", "")]), "method": run,
                                 "ours_mean": float(mean), "ours_std": float(std),
                                 "n_seeds": int(row[("seeds", "n")]), "status": status})
    table = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in ("delta", "off")])
    table["ours_mean"] = table["ours_mean"].astype(float)
    table["ours_std"] = table["ours_std"].astype(float)
    table["published"] = table["published"].astype(float)
    table["n_seeds"] = table["n_seeds"].astype("Int64")
    table["delta"] = table["ours_mean"] - table["published"]
    table["off"] = table["delta"].abs() > tolerance  # NaN compares False: a missing run is not 'off'
    measured = table["status"].isna()
    table.loc[measured, "status"] = table.loc[measured, "off"].map({True: OFF, False: WITHIN})
    return table[COMPARISON_COLUMNS]


def _published_note(published: dict, tex: bool) -> str:
    tolerance = _tolerance(published)
    mark = "$^\\dagger$" if tex else "⚠"
    source = tex_escape(published.get("source", "")) if tex else published.get("source", "")
    plus_minus = "$\\pm$" if tex else "±"
    percent = "\\%" if tex else "%"
    missing = "--" if tex else MISSING
    return (f"Source: {source or 'not given'}. Ours: mean {plus_minus} sample std over seeds (accuracies in "
            f"{percent}); paper: the published value. Tolerance: {tolerance:g} percentage points; {mark} (and bold): "
            f"our mean is further than the tolerance from the paper's; not run: the run is not in our grid; "
            f"{missing}: not reported.")


def published_formatted(comparison: pd.DataFrame, benchmark: str, plus_minus: str = "±",
                        mark: str = "md") -> pd.DataFrame:
    """One benchmark's comparison as a table: a row per run, an 'ours' and a 'paper' column per metric."""
    part = comparison[comparison["benchmark"] == benchmark]
    metrics = ordered_metrics(part["metric"]) + [m for m in dict.fromkeys(part["metric"]) if not is_metric(m)]
    task_il_shown = any(m.endswith(TASK_IL) for m in metrics)
    runs = list(dict.fromkeys(zip(part["backbone"].fillna(MISSING), part["method"])))
    rows = []
    for backbone, method in runs:
        sel = part[(part["backbone"].fillna(MISSING) == backbone) & (part["method"] == method)]
        row = {"Backbone": backbone, "Method": method}
        for metric in metrics:
            label = metric_label(metric, task_il_shown)
            hit = sel[sel["metric"] == metric]
            if hit.empty:
                row[f"{label} ours"] = row[f"{label} paper"] = MISSING
                continue
            r = hit.iloc[0]
            if r["status"] == NOT_RUN or str(r["status"]).startswith(DIVERGED):
                ours = r["status"]
            else:
                ours = _cell(r["ours_mean"], r["ours_std"], plus_minus)
                if r["off"]:
                    ours = BOLD[mark].format(ours) + MARK[mark]
            row[f"{label} ours"] = ours
            row[f"{label} paper"] = f"{r['published']:.2f}"
        n = sel["n_seeds"].dropna()
        row["Seeds"] = str(int(n.iloc[0])) if len(n) else MISSING
        rows.append(row)
    table = pd.DataFrame(rows)
    if part["backbone"].nunique() <= 1:  # a run we lack has no backbone: it does not count as a second one
        table = table.drop(columns="Backbone")
    return table


def published_markdown(comparison: pd.DataFrame, published: dict) -> str:
    parts = []
    for bench in dict.fromkeys(comparison["benchmark"]):
        table = published_formatted(comparison, bench, mark="md")
        # numparse off: tabulate would print the paper's 19.60 as 19.6
        body = table.to_markdown(index=False, disable_numparse=True)
        parts.append(f"### {bench}\n\n{body}\n\n{_published_note(published, tex=False)}\n")
    return "\n".join(parts)


def published_latex(comparison: pd.DataFrame, published: dict) -> str:
    parts = ["% needs \\usepackage{booktabs}\n"]
    for bench in dict.fromkeys(comparison["benchmark"]):
        table = published_formatted(comparison, bench, plus_minus=r"$\pm$", mark="tex")
        parts.append("\\begin{table}[t]\n\\centering\n\\caption{" + tex_escape(bench) + ": ours and published}\n"
                     + _booktabs(table) + "\\par\\smallskip\n{\\footnotesize " + _published_note(published, tex=True)
                     + "}\n\\end{table}\n")
    return "\n".join(parts)


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
