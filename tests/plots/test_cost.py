"""clgrid.plots.cost: run totals and means over seeds, cost.md beside the ACC, the accuracy-vs-compute figure."""

import math

import pandas as pd
import pytest

from clgrid.cost import COLUMNS
from clgrid.plots import cost as pc


def _row(method, seed, task, wall, cpu=1.0, rss=500.0, samples=10, flops=100.0, stage="final"):
    return {"stage": stage, "benchmark": "b", "backbone": "mlp", "method": method, "seed": seed, "task": task,
            "wall_s": wall, "cpu_s": cpu, "gpu_s": 0.0, "max_rss_mb": rss, "samples": samples,
            "flops_train": flops, "flops_eval": 1.0, "checkpoint_bytes": 1000}


ROWS = [_row("naive", 0, 0, 1.0), _row("naive", 0, 1, 2.0, rss=800.0), _row("naive", 0, "init", 0.5, samples=0),
        _row("naive", 1, 0, 3.0), _row("naive", 1, 1, 4.0), _row("naive", 1, "init", 0.5, samples=0),
        _row("ewc", 0, 0, 2.0, cpu=math.nan, rss=math.nan), _row("ewc", 0, 1, 2.0),
        _row("ewc~val~ewc_lambda=1", 0, 0, 9.0, stage="selection")]


def test_run_totals_add_seconds_and_take_the_largest_peak():
    totals = pc.run_totals(pd.DataFrame(ROWS, columns=list(COLUMNS)))
    naive0 = totals[(totals["method"] == "naive") & (totals["seed"] == 0)].iloc[0]
    assert naive0["wall_s"] == 3.5 and naive0["cpu_s"] == 3.0 and naive0["samples"] == 20
    assert naive0["max_rss_mb"] == 800.0 and naive0["checkpoint_bytes"] == 3000


def test_an_unmeasured_job_makes_its_runs_total_a_marked_lower_bound():
    totals = pc.run_totals(pd.DataFrame(ROWS, columns=list(COLUMNS)))
    ewc = totals[totals["method"] == "ewc"].iloc[0]
    assert ewc["wall_s"] == 4.0 and not ewc["wall_s_partial"]
    assert ewc["cpu_s"] == 1.0 and ewc["cpu_s_partial"]  # the measured job's second only
    assert ewc["max_rss_mb"] == 500.0 and ewc["max_rss_mb_partial"]
    naive = totals[totals["method"] == "naive"]
    assert not naive["cpu_s_partial"].any()
    unmeasured = pc.run_totals(pd.DataFrame([_row("a", 0, 0, 1.0, cpu=math.nan)], columns=list(COLUMNS)))
    assert math.isnan(unmeasured["cpu_s"].iloc[0]) and not unmeasured["cpu_s_partial"].iloc[0]  # none measured


def test_method_means_are_over_seeds_and_stages_stay_apart():
    means = pc.method_means(pc.run_totals(pd.DataFrame(ROWS, columns=list(COLUMNS))))
    naive = means[means["method"] == "naive"].iloc[0]
    assert naive["wall_s"] == pytest.approx((3.5 + 7.5) / 2) and naive["seeds"] == 2
    assert list(means["stage"]) == ["final", "final", "selection"]


def test_si_prefixes():
    assert pc.si(3.52e10) == "35.2 G" and pc.si(1.5, "s") == "1.5 s" and pc.si(2.06e6, "B") == "2.06 MB"
    assert pc.si(0, "s") == "0 s" and pc.si(math.nan) == "–" and pc.si(4.2e18) == "4.2e+03 P"


def test_cost_markdown_puts_the_acc_beside_the_final_runs_and_candidates_apart(tmp_path):
    summary = tmp_path / "summary.csv"
    pd.DataFrame({"benchmark": ["b", "b"], "backbone": ["mlp", "mlp"], "method": ["naive", "ewc"],
                  "acc_mean": [17.04, 80.0], "acc_std": [4.92, math.nan]}).to_csv(summary, index=False)
    csv, md = pc.write_cost_tables(ROWS, str(summary), str(tmp_path))
    assert pd.read_csv(csv).shape == (len(ROWS), len(COLUMNS))
    text = md.read_text()
    assert "### Final runs: b" in text and "### Selection (candidates on validation data): b" in text
    naive = next(line for line in text.splitlines() if "| naive" in line)
    assert "17.0 ± 4.9" in naive and "5.5 s" in naive  # mean wall over 2 seeds: (3.5 + 7.5) / 2
    ewc = next(line for line in text.splitlines() if "| ewc " in line)
    assert "| 80.0 " in ewc and "| ≥ 1 s " in ewc and "| 4 s " in ewc  # one seed: no std; CPU of one job of two


def test_the_figure_has_a_panel_per_compute_measure_and_a_colour_per_method(tmp_path):
    from clgrid.plots.figures import method_palette

    cost_csv = tmp_path / "cost.csv"
    pd.DataFrame(ROWS, columns=list(COLUMNS)).to_csv(cost_csv, index=False)
    runs_csv = tmp_path / "runs.csv"
    pd.DataFrame({"benchmark": "b", "backbone": "mlp", "method": ["naive", "naive", "ewc"], "seed": [0, 1, 0],
                  "acc": [20.0, 14.0, 80.0]}).to_csv(runs_csv, index=False)
    paths = pc.write_cost_figure(str(cost_csv), str(runs_csv), "b", "mlp", str(tmp_path))
    assert [p.name for p in paths] == ["acc_vs_compute.png", "acc_vs_compute.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)

    totals = pc.run_totals(pd.read_csv(cost_csv, dtype={"task": str}))
    points = totals[totals["stage"] == "final"].merge(pd.read_csv(runs_csv))
    fig = pc.plot_acc_vs_compute(points, method_palette(["naive", "ewc"]), "b / mlp")
    flops_ax, wall_ax = fig.axes[:2]
    assert flops_ax.get_xscale() == wall_ax.get_xscale() == "log"
    means = flops_ax.collections[1]  # naive's mean point: the mean of both coordinates over its seeds
    assert list(means.get_offsets()[0]) == [pytest.approx(300.0), pytest.approx(17.0)]
    assert tuple(means.get_facecolor()[0][:3]) == pytest.approx(method_palette(["naive", "ewc"])["naive"])
    with pytest.raises(ValueError, match="no final runs"):
        pc.write_cost_figure(str(cost_csv), str(runs_csv), "other", "mlp", str(tmp_path))
