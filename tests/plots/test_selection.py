"""The selection report (clgrid.plots.selection) and the chosen values in the tables' notes, on files written here."""

import pytest

from clgrid.io import write_json
from clgrid.plots.selection import write_selection_report
from clgrid.plots.tables.summary import selected_text


def _metrics(path, method, seed, acc, **extra):
    write_json(path, {"benchmark": "b", "backbone": "mlp", "method": method, "seed": seed,
                      "metrics": {"acc": acc, **extra}})
    return str(path)


def test_the_report_gives_the_choice_the_interval_and_the_optimism_of_the_best_test_row(tmp_path):
    selection = tmp_path / "results/selection/b/mlp/ewc/selection.json"
    write_json(selection, {
        "base": "ewc", "protocol": "whole_stream", "metric": "acc", "chosen": "ewc~val~ewc_lambda=10",
        "values": {"ewc_lambda": 10}, "score": 60.0,
        "candidates": [{"run": "ewc~val~ewc_lambda=1", "values": {"ewc_lambda": 1}, "score": 50.0,
                        "per_seed": {"0": 49.0, "1": 51.0, "2": 50.0}},
                       {"run": "ewc~val~ewc_lambda=10", "values": {"ewc_lambda": 10}, "score": 60.0,
                        "per_seed": {"0": 59.0, "1": 61.0, "2": 60.0}}]})
    # final runs: 58, 60, 62 -> mean 60, half-width t(0.975, 2) * 2 / sqrt(3) = 4.303 * 1.1547 = 4.97
    finals = [_metrics(tmp_path / f"f{s}.json", "ewc~selected", s, 58.0 + 2 * s) for s in range(3)]
    # test rows: lambda=1 on test 63 on average (better than the selected 60): optimism +3.0
    rows = [_metrics(tmp_path / f"t{v}{s}.json", f"ewc~test~ewc_lambda={v}", s, acc)
            for v, acc in ((1, 63.0), (10, 60.0)) for s in range(3)]
    written = write_selection_report([str(selection)], [], finals, rows, str(tmp_path / "tables"),
                                     [str(tmp_path / "figures/b/mlp")])
    text = (tmp_path / "tables/selection.md").read_text()
    assert "Chosen: **ewc_lambda=10**" in text and "| **ewc_lambda=10** | 60.0 | 59.0 | 61.0 | 60.0 | 60.0 |" in text
    assert "- ACC 60.0 ± 5.0 (n=3)" in text
    assert "(ewc_lambda=1) would have reported ACC 63.0: +3.0 points over the selected run" in text
    assert (tmp_path / "figures/b/mlp/selection.png").stat().st_size > 5000 and len(written) == 4


def test_a_sweep_of_two_keys_finds_its_test_rows_by_the_sweeps_own_spelling(tmp_path):
    # Run names join a point's values with "," in the sweep's order (ewc~test~ewc_lambda=1,lr=0.1); the report's
    # "values" column is for reading (", "), and must not be what the test rows are looked up by.
    from clgrid.plots.selection import selection_frame

    selection = tmp_path / "results/selection/b/mlp/ewc/selection.json"
    write_json(selection, {
        "base": "ewc", "protocol": "first_k", "k": 2, "metric": "acc", "chosen": "ewc~first2~ewc_lambda=1,lr=0.1",
        "candidates": [{"run": "ewc~first2~ewc_lambda=1,lr=0.1", "values": {"ewc_lambda": 1, "lr": 0.1},
                        "score": 50.0, "per_seed": {"0": 50.0}}]})
    rows = [_metrics(tmp_path / "t.json", "ewc~test~ewc_lambda=1,lr=0.1", 0, 63.0)]
    frame = selection_frame([str(selection)], rows)
    assert frame.loc[0, "values"] == "ewc_lambda=1, lr=0.1"
    assert frame.loc[0, "test_acc"] == 63.0 and frame.loc[0, "test_seeds"] == 1


def test_the_tables_name_the_values_a_selected_run_was_trained_with():
    assert selected_text({"values": {"ewc_lambda": 10, "lr": 0.01}}) == "ewc_lambda=10,lr=0.01"
    per_task = {"stability_key": "ewc_lambda", "per_task": [
        {"task": 0, "lr": 0.05, "ewc_lambda": 1000.0, "plasticity": 99.0},
        {"task": 1, "lr": 0.01, "ewc_lambda": 250.0, "plasticity": 90.0}]}
    assert selected_text(per_task) == "lr=0.05,ewc_lambda=1000; lr=0.01,ewc_lambda=250"
