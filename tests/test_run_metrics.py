"""metrics.json from evaluation rows (clgrid.run_metrics.run_record): the validation block of an ordinary run on a
benchmark with validation splits, and a selection job's record, whose every row is on the validation splits."""

import pytest

from clgrid.run_metrics import run_record
from clgrid.spec import RunSpec

PROV = {"device": "cpu"}


def _spec(**extra):
    return RunSpec.of({"benchmark": "b", "benchmark_cfg": {"scenario": "class_incremental", "dataset": "digits",
                                                           "n_tasks": 2, "validation": {"fraction": 0.1}},
                       "backbone": "mlp", "backbone_cfg": {"arch": "mlp"}, "seed": 0, "device": "cpu",
                       "method": "naive", "method_name": "naive", **extra})


def _row(t, acc, til, **extra):
    return {"after_task": t, "acc": acc, "acc_task_il": til, "top5": acc, "provenance": PROV, **extra}


def test_ordinary_run_gets_the_validation_matrix_and_its_final_average():
    init = {"acc": [10.0, 10.0], "acc_task_il": [50.0, 50.0], "validation": {"acc": [9.0, 11.0],
                                                                             "acc_task_il": [48.0, 52.0]}}
    rows = [_row(0, [95.0, 0.0], [96.0, 50.0], validation={"acc": [90.0, 0.0], "acc_task_il": [92.0, 40.0]}),
            _row(1, [20.0, 94.0], [70.0, 97.0], validation={"acc": [30.0, 80.0], "acc_task_il": [60.0, 90.0]})]
    result = run_record(_spec(), init, rows, [])
    # Final average accuracy: the last row's mean, (30 + 80) / 2 = 55 and (60 + 90) / 2 = 75.
    assert result["validation"] == {"acc_matrix": [[90.0, 0.0], [30.0, 80.0]],
                                    "acc_task_il_matrix": [[92.0, 40.0], [60.0, 90.0]], "acc": 55.0,
                                    "acc_task_il": 75.0}
    assert result["metrics"]["acc"] == 57.0 and "evaluated_on" not in result  # the test matrix is the headline
    rows[1] = {k: v for k, v in rows[1].items() if k != "validation"}
    assert "validation" not in run_record(_spec(), init, rows, [])  # every row needs one


def test_selection_run_measures_against_the_initial_models_validation_row():
    init = {"acc": [10.0, 10.0], "acc_task_il": [50.0, 50.0], "validation": {"acc": [8.0, 12.0],
                                                                             "acc_task_il": [44.0, 56.0]}}
    rows = [_row(0, [90.0, 0.0], [92.0, 40.0], evaluated_on="validation"),
            _row(1, [30.0, 80.0], [60.0, 90.0], evaluated_on="validation")]
    result = run_record(_spec(evaluate_on="validation"), init, rows, [])
    assert result["evaluated_on"] == "validation" and result["init_acc"] == [8.0, 12.0]
    assert result["metrics"]["acc"] == 55.0
    assert result["metrics"]["fwt"] == pytest.approx(0.0 - 12.0)  # R[0, 1] - b_1 on the validation split
    # An initial evaluation that was itself on validation data is used as it is.
    own = {"acc": [7.0, 13.0], "acc_task_il": [40.0, 60.0], "evaluated_on": "validation"}
    assert run_record(_spec(evaluate_on="validation"), own, rows, [])["init_acc"] == [7.0, 13.0]


def test_rows_on_the_wrong_data_are_refused():
    init = {"acc": [10.0, 10.0], "acc_task_il": [50.0, 50.0]}
    test_rows = [_row(0, [90.0, 0.0], [92.0, 40.0]), _row(1, [30.0, 80.0], [60.0, 90.0])]
    with pytest.raises(ValueError, match=r"evaluations after tasks \[0, 1\] were on the test sets"):
        run_record(_spec(evaluate_on="validation"), init, test_rows, [])
    val_rows = [{**r, "evaluated_on": "validation"} for r in test_rows]
    with pytest.raises(ValueError, match="holds no validation row"):
        run_record(_spec(evaluate_on="validation"), init, val_rows, [])
    with pytest.raises(ValueError, match="evaluated on the test sets, but some"):
        run_record(_spec(), init, val_rows, [])
