"""Which methods a table can tell apart: the best mean per benchmark × backbone × metric, every other method tested
against it on the seeds both ran (paired t or Wilcoxon, ``clgrid.stats``), Holm-corrected over those comparisons;
and every seed's number of the headline metrics. The settings are the config's ``tables:`` block (issue 21).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import pandas as pd

from clgrid.plots.tables.summary import KEYS, higher_is_better, metric_label, ordered_metrics

SPREADS = ("ci95", "std")
"""What follows the ± of a summary cell: the half-width of the 95% Student-t interval, or the sample std."""
TESTS = ("t", "wilcoxon", "none")
CORRECTIONS = ("holm", "none")

BEST, NOT_DIFFERENT, DIFFERENT, NOT_TESTED = ("best", "not significantly different", "significantly different",
                                              "not tested")
"""A method's verdict against the best of its column (comparisons.csv's ``verdict``)."""

HEADLINE = ("acc", "acc_task_il", "forgetting", "forgetting_task_il", "mtil_last", "p_at_1_seen", "p_at_1_unseen")
"""The metrics of the per-seed table, where a benchmark measured them."""

COMPARISON_COLUMNS = ["benchmark", "backbone", "metric", "method", "mean", "n", "best_method", "best_mean",
                      "mean_diff", "n_shared", "p", "p_adjusted", "test", "correction", "alpha", "significant",
                      "verdict"]


@dataclass(frozen=True)
class TableStats:
    """The config's ``tables:`` block; the defaults are the schema's (a test checks they agree)."""

    spread: str = "ci95"
    test: str = "t"
    correction: str = "holm"
    alpha: float = 0.05

    @classmethod
    def of(cls, settings: Mapping[str, Any] | None) -> "TableStats":
        """From the config's block (JSON from the rule); absent keys take the defaults. A wrong value names its key."""
        settings = dict(settings or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown key tables.{unknown[0]}; valid: {', '.join(sorted(known))}")
        stats = cls(**settings)
        for key, allowed in (("spread", SPREADS), ("test", TESTS), ("correction", CORRECTIONS)):
            if getattr(stats, key) not in allowed:
                raise ValueError(f"tables.{key} is {getattr(stats, key)!r}; valid: {', '.join(allowed)}")
        if not 0 < float(stats.alpha) < 1:
            raise ValueError(f"tables.alpha is {stats.alpha!r}; give a significance level between 0 and 1, e.g. 0.05")
        return stats


def _finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of methods none of whose seeds diverged: a method with a diverged seed has no mean, so no test."""
    if "diverged_task" not in runs:
        return runs
    bad = runs[runs["diverged_task"].notna()][KEYS].drop_duplicates()
    key = runs[KEYS].apply(tuple, axis=1)
    return runs[~key.isin(set(bad.apply(tuple, axis=1)))]


def _per_seed(part: pd.DataFrame, metric: str) -> dict[str, dict[int, float]]:
    """method -> {seed: value} of one benchmark × backbone, finite values only, methods in table order."""
    out: dict[str, dict[int, float]] = {}
    for method, rows in part.groupby("method", sort=False, observed=True):
        values = {int(s): float(v) for s, v in zip(rows["seed"], pd.to_numeric(rows[metric], errors="coerce"))
                  if math.isfinite(float(v))}
        if values:
            out[str(method)] = values
    return out


def compare_methods(runs: pd.DataFrame, stats: TableStats) -> pd.DataFrame:
    """One row per benchmark × backbone × metric × method (methods with a diverged seed left out): its mean, the
    column's best, the mean over shared seeds of (method − best), the paired test's p and its corrected p, and the
    verdict (``BEST``, ``NOT_DIFFERENT``, ``DIFFERENT`` or ``NOT_TESTED``: fewer than two shared seeds, or no test).
    ``best_method`` is the first of the best mean in table order; a method with exactly that mean is ``BEST`` too.

    The family Holm corrects over is the comparisons with the best in one column (one benchmark, backbone, metric).
    """
    from clgrid.stats import compare_to_best

    rows = []
    runs = _finished(runs)
    metrics = ordered_metrics(runs.columns)
    for (bench, backbone), part in runs.groupby(["benchmark", "backbone"], sort=False, observed=True):
        for metric in metrics:
            per_seed = _per_seed(part, metric)
            if not per_seed:
                continue
            higher = higher_is_better(metric)
            # No test still needs the best; its p-values are then dropped.
            result = compare_to_best(per_seed, higher, "t" if stats.test == "none" else stats.test, stats.alpha)
            best = next(m for m, r in result.items() if r["best"])
            for method, values in per_seed.items():
                r = result[method]
                shared = sorted(set(values) & set(per_seed[best]))
                diff = math.fsum(values[s] - per_seed[best][s] for s in shared) / len(shared) if shared else math.nan
                p = math.nan if stats.test == "none" or method == best else float(r["p"])
                p_adj = p if stats.correction == "none" else (math.nan if math.isnan(p) else float(r["p_holm"]))
                if r["best"] or r["mean"] == result[best]["mean"]:  # a tie of the best mean: both are best
                    verdict = BEST
                elif math.isnan(p_adj):
                    verdict = NOT_TESTED
                else:
                    verdict = DIFFERENT if p_adj < stats.alpha else NOT_DIFFERENT
                rows.append({"benchmark": str(bench), "backbone": str(backbone), "metric": metric, "method": method,
                             "mean": float(r["mean"]), "n": len(values), "best_method": best,
                             "best_mean": float(result[best]["mean"]), "mean_diff": diff, "n_shared": len(shared),
                             "p": p, "p_adjusted": p_adj, "test": stats.test, "correction": stats.correction,
                             "alpha": float(stats.alpha), "significant": verdict == DIFFERENT, "verdict": verdict})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def marks_of(comparisons: pd.DataFrame) -> dict[tuple[str, str, str, str], str]:
    """(benchmark, backbone, method, metric) -> verdict, for the summary tables' marks."""
    return {(r.benchmark, r.backbone, r.method, r.metric): r.verdict for r in comparisons.itertuples()}


def per_seed_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per benchmark × backbone × method × headline metric the benchmark measured, one column per seed
    (``s0``, ``s1``, ...; NaN where the seed did not run it, or diverged: runs.csv's ``diverged_task`` says which)."""
    seeds = sorted({int(s) for s in runs["seed"]})
    rows = []
    for bench, part in runs.groupby("benchmark", sort=False, observed=True):
        metrics = [m for m in HEADLINE if m in part and pd.to_numeric(part[m], errors="coerce").notna().any()]
        for metric in metrics:
            for (backbone, method), rows_of in part.groupby(["backbone", "method"], sort=False, observed=True):
                row = {"benchmark": str(bench), "backbone": str(backbone), "method": str(method), "metric": metric}
                by_seed = dict(zip(rows_of["seed"].astype(int), pd.to_numeric(rows_of[metric], errors="coerce")))
                row.update({f"s{s}": float(by_seed.get(s, math.nan)) for s in seeds})
                rows.append(row)
    return pd.DataFrame(rows, columns=["benchmark", "backbone", "method", "metric", *(f"s{s}" for s in seeds)])


def _cell(value: float, digits: str = ".1f") -> str:
    from clgrid.plots.tables.formatting import MISSING

    return MISSING if pd.isna(value) else format(value, digits)


def per_seed_markdown(table: pd.DataFrame, runs: pd.DataFrame) -> str:
    """per_seed.md: a table per benchmark × metric, a row per (backbone and) method, a column per seed."""
    from clgrid.plots.tables.formatting import DIVERGED

    diverged = set()
    if "diverged_task" in runs:
        diverged = {(str(r.benchmark), str(r.backbone), str(r.method), int(r.seed))
                    for r in runs[runs["diverged_task"].notna()].itertuples()}
    seed_cols = [c for c in table.columns if c.startswith("s") and c[1:].isdigit()]
    parts = []
    for bench in dict.fromkeys(table["benchmark"]):
        part = table[table["benchmark"] == bench]
        task_il = any(m.endswith("_task_il") for m in part["metric"])
        for metric in dict.fromkeys(part["metric"]):
            rows = part[part["metric"] == metric]
            out = pd.DataFrame({"Backbone": rows["backbone"], "Method": rows["method"]})
            for col in seed_cols:
                out[col] = [DIVERGED if (bench, b, m, int(col[1:])) in diverged else _cell(v)
                            for b, m, v in zip(rows["backbone"], rows["method"], rows[col])]
            if out["Backbone"].nunique() == 1:
                out = out.drop(columns="Backbone")
            body = out.to_markdown(index=False, disable_numparse=True)
            parts.append(f"### {bench}: {metric_label(metric, task_il)}\n\n{body}\n")
    note = ("Every seed's number of the headline metrics (accuracies in %), a column per training seed: the numbers "
            "the means, intervals and paired tests of summary.md and comparisons.md are made from. "
            f"{DIVERGED}: the seed's training hit a non-finite loss; –: the seed was not run.")
    return "\n".join(parts) + f"\n{note}\n"


def _p(value: float) -> str:
    from clgrid.plots.tables.formatting import MISSING

    return MISSING if pd.isna(value) else f"{value:.3g}"


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p the exact Wilcoxon signed-rank test can give on n paired differences: 2 / 2^n
    (every difference of one sign), 0.25 for three seeds."""
    return 2.0 / 2**n


def _test_name(stats: TableStats) -> str:
    return ("paired t-test" if stats.test == "t" else "exact Wilcoxon signed-rank test") + " on the seeds both share"


def _correction(stats: TableStats) -> str:
    return ("Holm-corrected over the comparisons with the best in the same column" if stats.correction == "holm"
            else "uncorrected (tables.correction: none)")


def _wilcoxon_warning(stats: TableStats, n_max: int) -> str:
    """Where the Wilcoxon test cannot reach ``alpha`` with the seeds there are, a sentence that says so."""
    if stats.test != "wilcoxon" or n_max < 1 or min_wilcoxon_p(n_max) < stats.alpha:
        return ""
    return (f"; with {n_max} seeds the Wilcoxon p is at least {min_wilcoxon_p(n_max):.3g}, so no difference can be "
            f"significant at α = {stats.alpha:g}: run more seeds or use tables.test: t")


def basis_sentence(stats: TableStats, n_max: int) -> str:
    """What the summary's marks rest on: the test, the correction, the level, and a warning where the Wilcoxon test
    cannot reach it with the seeds there are."""
    if stats.test == "none":
        return "No test (tables.test: none): only the best mean is marked."
    return f"{_test_name(stats)}, {_correction(stats)}, α = {stats.alpha:g}{_wilcoxon_warning(stats, n_max)}"


def comparisons_markdown(comparisons: pd.DataFrame, stats: TableStats) -> str:
    """comparisons.md: per benchmark × backbone, every method against the best of each metric."""
    parts = []
    for (bench, backbone), part in comparisons.groupby(["benchmark", "backbone"], sort=False):
        task_il = any(m.endswith("_task_il") for m in part["metric"])
        out = pd.DataFrame({
            "Metric": [metric_label(m, task_il) for m in part["metric"]],
            "Method": part["method"],
            "Mean": [_cell(v) for v in part["mean"]],
            "Δ vs best": [_diff_cell(v, verdict) for v, verdict in zip(part["mean_diff"], part["verdict"])],
            "Shared seeds": part["n_shared"].astype(int).astype(str),
            "p": [_p(v) for v in part["p"]],
            "p adjusted": [_p(v) for v in part["p_adjusted"]],
            "Verdict": part["verdict"],
        })
        parts.append(f"### {bench} / {backbone}\n\n{out.to_markdown(index=False, disable_numparse=True)}\n")
    n_max = int(comparisons["n_shared"].max()) if len(comparisons) else 0
    if stats.test == "none":
        tests = "No test (tables.test: none): every method but the best is 'not tested'."
    else:
        tests = (f"p: two-sided, of the {_test_name(stats)}; p adjusted: {_correction(stats)}; 'significantly "
                 f"different' where p adjusted < α = {stats.alpha:g}{_wilcoxon_warning(stats, n_max)}. 'not "
                 "significantly different': the seeds cannot tell the method from the best (the ≈ of summary.md); "
                 "'not tested': fewer than two shared seeds.")
    note = ("Each method against the best mean of its column (benchmark, backbone, metric; lower is better for "
            "forgetting and the drops). Δ vs best: mean over the seeds both share of (method − best). "
            f"{tests} A method with a diverged seed has no mean and is left out.")
    return "\n".join(parts) + f"\n{note}\n"


def _diff_cell(diff: float, verdict: str) -> str:
    return "(best)" if verdict == BEST else _cell(diff, "+.2f")
