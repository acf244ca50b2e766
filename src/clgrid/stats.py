"""Statistics over seeds for the tables: a mean's Student-t confidence interval, paired tests between methods on the
seeds they share (``scipy.stats``), Holm's correction for the many comparisons, and which methods cannot be told
apart from the best. Pure functions of per-seed numbers (issue 21, "Statistics"); the tables use them through
clgrid.plots.tables.comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

TESTS = ("t", "wilcoxon")
"""Paired tests: the paired t-test (``scipy.stats.ttest_rel``) and the Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``, exact for few seeds)."""


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with the half-width of its confidence interval (NaN below two seeds) and the seed count."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean ± t_{(1+level)/2, n−1} · s/√n (s the sample std): the Student-t interval over n seeds."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, 0)
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, math.nan, n)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n), n)


def paired_p(a: Mapping[int, float], b: Mapping[int, float], test: str = "t") -> tuple[float, int]:
    """Two-sided p-value of a paired test of ``a`` against ``b`` over the seeds both have, and that seed count.

    Identical numbers on every shared seed give p = 1 (no evidence of a difference; scipy would return NaN or
    refuse). Fewer than two shared seeds give NaN: nothing to test."""
    from scipy import stats

    if test not in TESTS:
        raise ValueError(f"unknown paired test '{test}'; valid: {', '.join(TESTS)}")
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return math.nan, len(seeds)
    diffs = [a[s] - b[s] for s in seeds]
    if all(d == 0 for d in diffs):
        return 1.0, len(seeds)
    if test == "t":
        if len(set(diffs)) == 1:  # a constant nonzero difference: zero variance, the t statistic is infinite
            return 0.0, len(seeds)
        return float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue), len(seeds)
    return float(stats.wilcoxon(diffs).pvalue), len(seeds)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order: the i-th smallest of m is multiplied by
    m − i (i from 0), made non-decreasing along that order, capped at 1. NaN stays NaN and is not counted in m."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def compare_to_best(per_seed: Mapping[str, Mapping[int, float]], higher_is_better: bool = True, test: str = "t",
                    alpha: float = 0.05) -> dict[str, dict[str, float | bool | int]]:
    """The best method by mean over seeds, and every other one tested against it on shared seeds (Holm over those
    comparisons): ``{method: {mean, p, p_holm, seeds, best, tied}}``, where ``tied`` is the best itself or a method
    whose Holm-adjusted p is not below ``alpha`` (including one with too few shared seeds to test). Ties of the
    mean go to the first method in ``per_seed``'s order."""
    means = {m: math.fsum(v.values()) / len(v) for m, v in per_seed.items() if v}
    if not means:
        return {}
    sign = 1 if higher_is_better else -1
    best = max(means, key=lambda m: (sign * means[m], -list(means).index(m)))
    others = [m for m in means if m != best]
    raw = {m: paired_p(per_seed[m], per_seed[best], test) for m in others}
    adjusted = dict(zip(others, holm([raw[m][0] for m in others])))
    result: dict[str, dict[str, float | bool | int]] = {
        best: {"mean": means[best], "p": math.nan, "p_holm": math.nan, "seeds": len(per_seed[best]), "best": True,
               "tied": True}}
    for m in others:
        p_adj = adjusted[m]
        result[m] = {"mean": means[m], "p": raw[m][0], "p_holm": p_adj, "seeds": raw[m][1], "best": False,
                     "tied": math.isnan(p_adj) or p_adj >= alpha}
    return result
