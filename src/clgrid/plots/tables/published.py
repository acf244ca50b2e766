"""Published numbers beside ours: the comparison, its tolerance marks, and its Markdown and LaTeX tables."""

from __future__ import annotations

import math

import pandas as pd

from clgrid.plots.tables.formatting import BOLD, DIVERGED, MISSING, booktabs, diverged_cell, mean_std_cell, tex_escape
from clgrid.plots.tables.summary import TASK_IL, is_metric, metric_label, ordered_metrics, unflatten

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
                ours = mean_std_cell(r["ours_mean"], r["ours_std"], plus_minus)
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
                     + booktabs(table) + "\\par\\smallskip\n{\\footnotesize " + _published_note(published, tex=True)
                     + "}\n\\end{table}\n")
    return "\n".join(parts)
