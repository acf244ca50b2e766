"""The statistics wired into the tables (issue 21): the 95% interval in the summary cells, the best method and those
the paired tests on shared seeds cannot tell from it marked, Holm's correction over each column's comparisons, the
per-seed and comparison tables, and the config's ``tables:`` block that chooses all of it."""

import math

import pandas as pd
import pytest
import yaml
from scipy import stats as scipy_stats

from clgrid.config import ConfigError, check
from clgrid.config.schema import load_schema
from clgrid.io import read_json, write_json
from clgrid.plots.tables import TableStats, write_tables
from clgrid.plots.tables.comparisons import min_wilcoxon_p
from tests.conftest import SCHEMA

# t_{0.975, 2}, the 95% two-sided quantile of Student's t on 2 degrees of freedom, in closed form: on 2 degrees of
# freedom the quantile of q is (2q - 1) sqrt(2 / (4 q (1 - q))) = 0.95 sqrt(2 / 0.0975) = 4.3026527297494...
T_975_2 = 0.95 * math.sqrt(2 / 0.0975)

# Three seeds. B trails A by 9, 10 and 11 points in seeds 0, 1, 2; C sits within a point and a half of A, on both
# sides; D ran one seed only. Forgetting is 100 - ACC, so the lowest forgetting is A's again.
ACC = {"A": {0: 80.0, 1: 82.0, 2: 84.0}, "B": {0: 71.0, 1: 72.0, 2: 73.0}, "C": {0: 79.0, 1: 83.0, 2: 83.5},
       "D": {0: 10.0}}


def _metrics_file(path, method, seed, acc, benchmark="bench", diverged=False):
    write_json(path, {"benchmark": benchmark, "backbone": "mlp", "method": method, "seed": seed,
                      "metrics": {"acc": acc, "forgetting": 100.0 - acc}, "acc_matrix": [[acc]],
                      "provenance": {"config_hash": "h", "git_commit": "c", "device": "cpu"}})
    if diverged:
        write_json(path, {**read_json(path), "diverged": True, "diverged_at": {"task": 0, "step": 3, "loss": "nan"}})
    return str(path)


def _tables(tmp_path, stats=None, acc=ACC):
    files = [_metrics_file(tmp_path / f"{m}_s{s}.json", m, s, a) for m, seeds in acc.items() for s, a in seeds.items()]
    return write_tables(files, str(tmp_path / "tables"), stats)


def _rows(md):
    """Method -> the cells of its row in a Markdown table (the first table that has it)."""
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows


# By hand. Paired differences B - A: -9, -10, -11 (mean -10, sd 1): t = -10 / (1 / sqrt 3), t^2 = 300. C - A: -1, 1,
# -0.5 (mean -1/6, variance 13/12): t^2 = (1/36) / (13/36) = 1/13. On 2 degrees of freedom the two-sided p of t is
# 1 - |t| / sqrt(t^2 + 2) (the t_2 distribution's closed form).
P_B = 1 - math.sqrt(300 / 302)   # 0.0033168
P_C = 1 - math.sqrt(1 / 27)      # 0.80755
# Holm, m = 2 (D has one seed: no test, not in the family): the smaller, P_B, times 2; then P_C times 1, kept >= it.
P_B_HOLM, P_C_HOLM = 2 * P_B, max(2 * P_B, P_C)


def test_hand_worked_p_values_are_scipys():
    assert scipy_stats.ttest_rel([71, 72, 73], [80, 82, 84]).pvalue == pytest.approx(P_B, rel=1e-9)
    assert scipy_stats.ttest_rel([79, 83, 83.5], [80, 82, 84]).pvalue == pytest.approx(P_C, rel=1e-9)
    assert scipy_stats.t.ppf(0.975, 2) == pytest.approx(T_975_2, rel=1e-12)
    assert T_975_2 == pytest.approx(4.302653, rel=1e-7)  # the printed tables' value


def test_summary_shows_the_95_interval_and_marks_the_best_and_its_ties(tmp_path):
    paths = _tables(tmp_path)
    summary = pd.read_csv(paths["summary.csv"]).set_index("method")
    # the half-width by hand: t_{0.975,2} * s / sqrt(3); s = 2 (A), 1 (B), sqrt(73/12) (C); none for one seed (D)
    for method, sd in (("A", 2.0), ("B", 1.0), ("C", math.sqrt(73 / 12))):
        assert summary.loc[method, "acc_ci95"] == pytest.approx(T_975_2 * sd / math.sqrt(3), rel=1e-5)
        assert summary.loc[method, "acc_std"] == pytest.approx(sd, rel=1e-5)
        assert summary.loc[method, "forgetting_ci95"] == pytest.approx(summary.loc[method, "acc_ci95"])
    assert math.isnan(summary.loc["D", "acc_ci95"]) and summary.loc["D", "seeds_n"] == 1
    # the old columns stay, in their order; the interval's follow each metric's std
    assert list(summary.columns[:7]) == ["benchmark", "backbone", "acc_mean", "acc_std", "acc_ci95", "forgetting_mean",
                                         "forgetting_std"]
    md = paths["summary.md"].read_text()
    rows = _rows(md)
    # A: 82 ± 4.968 best (bold) in ACC and, lower being better, in forgetting; C's p is far above 0.05: ≈;
    # B is significantly worse: no mark; D is untested (one seed): no mark, no ±.
    assert rows["A"] == ["**82.0 ± 5.0**", "**18.0 ± 5.0**", "3"]
    assert rows["B"] == ["72.0 ± 2.5", "28.0 ± 2.5", "3"]
    assert rows["C"] == ["81.8 ± 6.1 ≈", "18.2 ± 6.1 ≈", "3"]
    assert rows["D"] == ["10.0", "90.0", "1"]
    assert "95% confidence interval" in md and "Holm-corrected" in md and "α = 0.05" in md
    tex = paths["summary.tex"].read_text()
    assert r"\textbf{82.0 $\pm$ 5.0}" in tex and r"81.8 $\pm$ 6.1 $\approx$" in tex and "72.0 $\\pm$ 2.5 &" in tex


def test_comparisons_give_the_hand_worked_holm_p_values(tmp_path):
    table = pd.read_csv(_tables(tmp_path)["comparisons.csv"]).set_index(["metric", "method"])
    for metric, sign in (("acc", 1), ("forgetting", -1)):
        a, b, c, d = (table.loc[(metric, m)] for m in "ABCD")
        assert (table.loc[metric, "best_method"] == "A").all() and a["verdict"] == "best" and math.isnan(a["p"])
        assert b["p"] == pytest.approx(P_B, rel=1e-5) and b["p_adjusted"] == pytest.approx(P_B_HOLM, rel=1e-5)
        assert c["p"] == pytest.approx(P_C, rel=1e-5) and c["p_adjusted"] == pytest.approx(P_C_HOLM, rel=1e-5)
        assert b["verdict"] == "significantly different" and b["significant"]
        assert c["verdict"] == "not significantly different" and not c["significant"]
        assert d["verdict"] == "not tested" and d["n_shared"] == 1 and math.isnan(d["p_adjusted"])
        assert b["mean_diff"] == pytest.approx(-10 * sign) and c["mean_diff"] == pytest.approx(-sign / 6, rel=1e-5)
        assert b["n_shared"] == 3 and b["n"] == 3 and d["n"] == 1
        assert d["mean_diff"] == pytest.approx(sign * (10.0 - 80.0))  # on seed 0, the one D shares
    md = (tmp_path / "tables" / "comparisons.md").read_text()
    b_row = next(line for line in md.splitlines() if line.startswith("| ACC ") and "| B " in line)
    assert "-10.00" in b_row and f"{P_B:.3g}" in b_row and f"{P_B_HOLM:.3g}" in b_row


def test_per_seed_table_holds_every_seed(tmp_path):
    paths = _tables(tmp_path)
    table = pd.read_csv(paths["per_seed.csv"])
    assert list(table.columns) == ["benchmark", "backbone", "method", "metric", "s0", "s1", "s2"]
    acc = table[table["metric"] == "acc"].set_index("method")
    for method, seeds in ACC.items():
        assert [acc.loc[method, f"s{s}"] for s in seeds] == list(seeds.values())
    assert acc.loc["D", ["s1", "s2"]].isna().all()
    assert table[table["metric"] == "forgetting"].set_index("method").loc["B", "s2"] == 27.0
    md = paths["per_seed.md"].read_text()
    assert "### bench: ACC" in md and "### bench: Forgetting" in md
    assert _rows(md)["C"] == ["79.0", "83.0", "83.5"] and _rows(md)["D"] == ["10.0", "–", "–"]


def test_settings_change_the_spread_the_test_and_the_correction(tmp_path):
    std = _rows((_tables(tmp_path / "std", {"spread": "std"})["summary.md"]).read_text())
    assert std["A"][0] == "**82.0 ± 2.0**" and std["C"][0] == "81.8 ± 2.5 ≈"
    plain = _tables(tmp_path / "none", {"test": "none"})
    rows = _rows(plain["summary.md"].read_text())
    assert rows["A"][0] == "**82.0 ± 5.0**" and rows["C"][0] == "81.8 ± 6.1" and "only the best mean is marked" in \
        plain["summary.md"].read_text()
    assert set(pd.read_csv(plain["comparisons.csv"])["verdict"]) == {"best", "not tested"}
    raw = pd.read_csv(_tables(tmp_path / "raw", {"correction": "none"})["comparisons.csv"]).set_index(
        ["metric", "method"])
    assert raw.loc[("acc", "B"), "p_adjusted"] == pytest.approx(P_B, rel=1e-5)
    # alpha below B's Holm p (0.0066): B can no longer be told from A either
    strict = _rows(_tables(tmp_path / "strict", {"alpha": 0.005})["summary.md"].read_text())
    assert strict["B"][0] == "72.0 ± 2.5 ≈"


def test_wilcoxon_with_three_seeds_can_find_no_difference_and_says_so(tmp_path):
    assert min_wilcoxon_p(3) == 0.25 and min_wilcoxon_p(6) == pytest.approx(0.03125)
    paths = _tables(tmp_path, {"test": "wilcoxon"})
    table = pd.read_csv(paths["comparisons.csv"]).set_index(["metric", "method"])
    # B below A in all three seeds: the most extreme of the 2^3 sign patterns, p = 2/8; Holm doubles it
    assert table.loc[("acc", "B"), "p"] == pytest.approx(0.25) and table.loc[("acc", "B"), "p_adjusted"] == 0.5
    assert table.loc[("acc", "C"), "p"] == pytest.approx(scipy_stats.wilcoxon([-1, 1, -0.5]).pvalue)
    assert _rows(paths["summary.md"].read_text())["B"][0] == "72.0 ± 2.5 ≈"
    assert "with 3 seeds the Wilcoxon p is at least 0.25" in paths["summary.md"].read_text()
    assert "with 3 seeds the Wilcoxon p is at least 0.25" in paths["comparisons.md"].read_text()


def test_a_method_with_a_diverged_seed_is_left_out_of_the_tests(tmp_path):
    files = [_metrics_file(tmp_path / f"{m}_s{s}.json", m, s, a) for m in "AB" for s, a in ACC[m].items()]
    files.append(_metrics_file(tmp_path / "E_s0.json", "E", 0, 99.0))
    files.append(_metrics_file(tmp_path / "E_s1.json", "E", 1, float("nan"), diverged=True))
    paths = write_tables(files, str(tmp_path / "tables"))
    table = pd.read_csv(paths["comparisons.csv"])
    assert "E" not in set(table["method"]) and set(table["best_method"]) == {"A"}  # E's 99 is not a mean
    # the only comparison left: B against A, m = 1, so Holm leaves P_B as it is
    assert table.set_index(["metric", "method"]).loc[("acc", "B"), "p_adjusted"] == pytest.approx(P_B, rel=1e-5)
    assert _rows(paths["per_seed.md"].read_text())["E"] == ["99.0", "diverged", "–"]
    # a method that shares no seed with the best: no difference to take, no test
    f = write_tables([*files, _metrics_file(tmp_path / "F_s7.json", "F", 7, 50.0)], str(tmp_path / "with_f"))
    row = pd.read_csv(f["comparisons.csv"]).set_index(["metric", "method"]).loc[("acc", "F")]
    assert row["verdict"] == "not tested" and row["n_shared"] == 0 and math.isnan(row["mean_diff"])
    assert _rows(paths["summary.md"].read_text())["E"][0] == "diverged (1/2 seeds)"


def test_settings_default_to_the_schema_and_a_wrong_value_names_its_field():
    block = load_schema(str(SCHEMA))["properties"]["tables"]
    defaults = {key: prop["default"] for key, prop in block["properties"].items()}
    assert defaults == {"spread": "ci95", "test": "t", "correction": "holm", "alpha": 0.05}
    assert TableStats.of(None) == TableStats.of({}) == TableStats(**defaults)
    with pytest.raises(ValueError, match="tables.test is 'anova'; valid: t, wilcoxon, none"):
        TableStats.of({"test": "anova"})
    config = yaml.safe_load((SCHEMA.parent.parent.parent / "config" / "config.yaml").read_text())
    with pytest.raises(ConfigError) as err:
        check({**config, "tables": {"spread": "sem"}}, SCHEMA)
    assert err.value.path == "tables.spread" and "ci95" in str(err.value) and "std" in str(err.value)
    filled = {**config, "tables": {"test": "wilcoxon"}}
    check(filled, SCHEMA)
    assert filled["tables"] == {"spread": "ci95", "test": "wilcoxon", "correction": "holm", "alpha": 0.05}


def test_the_tables_verb_reads_the_rules_json(tmp_path):
    from clgrid.cli import main

    files = [_metrics_file(tmp_path / f"{m}_s{s}.json", m, s, a) for m in "AC" for s, a in ACC[m].items()]
    main(["tables", "--metrics", *files, "--stats", '{"spread":"std","test":"t"}', "--out-dir", str(tmp_path / "t")])
    assert _rows((tmp_path / "t" / "summary.md").read_text())["A"][0] == "**82.0 ± 2.0**"


def test_a_tie_of_the_best_mean_is_best_twice(tmp_path):
    # FWT of the default grid: every method has the same per-seed numbers; each is best, none is merely ≈
    paths = _tables(tmp_path, acc={"A": ACC["A"], "A2": dict(ACC["A"]), "B": ACC["B"]})
    rows = _rows(paths["summary.md"].read_text())
    assert rows["A"][0] == rows["A2"][0] == "**82.0 ± 5.0**" and rows["B"][0] == "72.0 ± 2.5"
    table = pd.read_csv(paths["comparisons.csv"]).set_index(["metric", "method"])
    assert table.loc[("acc", "A2"), "verdict"] == "best" and table.loc[("acc", "A2"), "best_method"] == "A"
    assert table.loc[("acc", "A2"), "p"] == 1.0  # identical on every seed: no evidence of a difference
