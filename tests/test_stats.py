"""The statistics of the tables, on worked examples: Student-t intervals, paired tests, Holm's correction, and which
methods cannot be told apart from the best."""

import math

import pytest

from clgrid.stats import compare_to_best, holm, mean_ci, paired_p


def test_mean_ci_by_hand():
    # [1, 2, 3]: mean 2, sample sd 1, t_{0.975, 2} = 4.302653 (tables), half-width 4.302653 / sqrt(3)
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.mean == 2.0 and ci.n == 3
    assert ci.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert (ci.low, ci.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), rel=1e-6)
    assert math.isnan(mean_ci([5.0]).half_width) and mean_ci([5.0]).mean == 5.0
    assert mean_ci([]).n == 0


def test_paired_tests_by_hand():
    a = {0: 11.0, 1: 13.0, 2: 15.0}
    b = {0: 10.0, 1: 11.0, 2: 12.0, 7: 99.0}  # seed 7 is not shared: left out
    # differences 1, 2, 3: t = 2 / (1 / sqrt 3) = 3.4641 on 2 degrees of freedom, two-sided p = 0.07418
    p, n = paired_p(a, b, "t")
    assert n == 3 and p == pytest.approx(0.074180, abs=1e-5)
    # Wilcoxon, exact: all 3 differences positive, the most extreme of 2^3 sign patterns on each side: p = 2/8
    assert paired_p(a, b, "wilcoxon") == (pytest.approx(0.25), 3)
    assert paired_p(a, a, "t") == (1.0, 3) and paired_p(a, a, "wilcoxon") == (1.0, 3)
    assert paired_p({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0}, "t") == (0.0, 2)  # constant difference: no variance
    assert math.isnan(paired_p({0: 1.0}, {0: 2.0})[0])
    with pytest.raises(ValueError, match="valid: t, wilcoxon"):
        paired_p(a, b, "anova")


def test_holm_by_hand_and_against_the_definition():
    # sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    adjusted = holm([0.2, math.nan, 0.01])
    assert math.isnan(adjusted[1]) and adjusted == pytest.approx([0.2, adjusted[1], 0.02], nan_ok=True)
    # the definition: reject H_(i) at alpha iff every H_(j), j <= i, has p_(j) <= alpha / (m - j)
    ps = [0.001, 0.012, 0.014, 0.2, 0.04]
    for alpha in (0.01, 0.05, 0.1):
        order = sorted(range(len(ps)), key=ps.__getitem__)
        rejected, still = set(), True
        for j, i in enumerate(order):
            still = still and ps[i] <= alpha / (len(ps) - j)
            if still:
                rejected.add(i)
        assert {i for i, p in enumerate(holm(ps)) if p <= alpha} == rejected


def test_compare_to_best_marks_the_best_and_the_ones_not_different():
    per_seed = {
        "naive": {0: 20.0, 1: 21.0, 2: 19.5},
        "ewc": {0: 80.0, 1: 78.0, 2: 82.0},
        "replay": {0: 79.0, 1: 78.5, 2: 81.0},
    }
    result = compare_to_best(per_seed)
    assert result["ewc"]["best"] and result["ewc"]["tied"]
    assert result["replay"]["tied"] and not result["replay"]["best"]  # p well above 0.05
    assert not result["naive"]["tied"] and result["naive"]["p_holm"] < 0.05
    assert result["naive"]["p_holm"] == pytest.approx(min(1.0, 2 * result["naive"]["p"]))  # the smaller of m = 2
    lower = compare_to_best({"a": {0: 5.0, 1: 6.0}, "b": {0: 1.0, 1: 2.0}}, higher_is_better=False)
    assert lower["b"]["best"] and lower["a"]["p"] == 0.0 and not lower["a"]["tied"]
