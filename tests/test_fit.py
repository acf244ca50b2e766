"""A task of a run as the train job does it (``clgrid.fit``): the evaluation curve of ``train.eval_every_iters`` in
eval.json, and ``train.lr_per_task`` checked against the benchmark's tasks."""

import copy

import pytest

from clgrid import config as cl
from clgrid import jobs
from clgrid.io import read_json


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """split_digits in 5 tasks, prepared, with the initial weights of mlp seed 0."""
    from clgrid.inprocess import validated
    from tests.conftest import DEFAULT_CONFIG, SCHEMA

    root = tmp_path_factory.mktemp("fit")
    config = validated(DEFAULT_CONFIG, SCHEMA)
    data, scenario = str(root / "digits.npz"), str(root / "s.json")
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), data)
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), [data], scenario)
    jobs.init_model(cl.init_spec(config, "split_digits", "mlp", 0), scenario, str(root / "init.pt"))
    return config, root, data, scenario


def _task0(digits, name, **train):
    config, root, data, scenario = digits
    config = copy.deepcopy(config)
    config["benchmarks"]["split_digits"]["train"].update({"iterations": 7, **train})
    spec = cl.run_spec(config, "split_digits", "mlp", "naive", 0)
    state, out = str(root / name / "state.pt"), str(root / name / "eval.json")
    jobs.train(spec, scenario, [data], str(root / "init.pt"), 0, state, out, checkpoint_every_s=None)
    return spec, read_json(out), root / name / "eval.json"


def test_eval_every_iters_records_a_curve_and_changes_nothing_else(digits):
    plain_spec, plain, plain_file = _task0(digits, "plain")
    spec, record, _ = _task0(digits, "curve", eval_every_iters=3)
    assert "eval_every_iters" not in plain_spec["train"] and "curve" not in plain  # absent: the files as before
    # 7 steps, a point after steps 3 and 6, each a row of every task's accuracies
    assert [p["step"] for p in record["curve"]] == [3, 6]
    assert all(len(p[k]) == 5 for p in record["curve"] for k in ("acc", "acc_task_il", "top5"))
    # measuring changes no weight: the task's own evaluation is the same numbers
    rest = {k: v for k, v in record.items() if k not in ("curve", "provenance")}
    assert rest == {k: v for k, v in plain.items() if k != "provenance"}
    assert record["provenance"]["config_hash"] != plain["provenance"]["config_hash"]


def test_the_last_point_of_a_curve_is_the_tasks_own_evaluation_when_it_ends_on_one(digits):
    # naive changes nothing after its last step: a point at the task's last step (6 of 6) is its eval row
    _, record, _ = _task0(digits, "end", iterations=6, eval_every_iters=2)
    assert [p["step"] for p in record["curve"]] == [2, 4, 6]
    last = record["curve"][-1]
    assert (last["acc"], last["acc_task_il"], last["top5"]) == (record["acc"], record["acc_task_il"], record["top5"])
    assert record["curve"][0]["acc"] != last["acc"]  # the model moved between the points


def test_lr_per_task_of_another_length_than_the_tasks_fails_the_job_before_training(digits):
    config, root, data, scenario = digits
    with pytest.raises(ValueError, match=r"train.lr_per_task gives 2 learning rate\(s\) \[0.05, 0.01\], but the "
                                         r"benchmark has 5 tasks"):
        _task0(digits, "short", lr_per_task=[0.05, 0.01])
    assert not (root / "short" / "state.pt").exists()


def test_the_schema_takes_both_keys_without_filling_them_in(digits):
    from tests.conftest import SCHEMA

    config = copy.deepcopy(digits[0])
    spec = cl.run_spec(config, "split_digits", "mlp", "naive", 0)
    assert not {"lr_per_task", "eval_every_iters"} & set(spec["train"])  # absent: run hashes kept
    config["benchmarks"]["split_digits"]["train"].update(lr_per_task=[0.05, 0.04, 0.03, 0.02, 0.01],
                                                         eval_every_iters=50)
    cl.check(config, SCHEMA)
    for bad in ({"lr_per_task": [0.05, 0.0]}, {"lr_per_task": []}, {"eval_every_iters": 0}):
        wrong = copy.deepcopy(config)
        wrong["benchmarks"]["split_digits"]["train"].update(bad)
        with pytest.raises(cl.ConfigError, match=next(iter(bad))):
            cl.check(wrong, SCHEMA)


def test_a_diverged_row_has_the_keys_of_the_rows_beside_it_on_validation_data_too():
    import math
    from types import SimpleNamespace

    from clgrid.fit import diverged_record
    from clgrid.spec import RunSpec

    spec = RunSpec.of({"benchmark": "b", "benchmark_cfg": {}, "backbone": "mlp", "backbone_cfg": {}, "seed": 0,
                       "device": "cpu", "method": "naive"})
    scenario = {"tasks": [{"val_idx": [0]}, {"val_idx": [1]}], "holdout": {"classes": [9]},
                "eval_sets": {"shifted": {}}}
    ordinary = diverged_record(spec, SimpleNamespace(scenario=scenario, evaluate_on="test", has_validation=True,
                                                     device="cpu"), 1, {"task": 1})
    assert sorted(ordinary) == ["acc", "acc_shifted", "acc_shifted_task_il", "acc_task_il", "after_task", "diverged",
                                "provenance", "top5", "unseen_acc", "validation"]
    assert all(math.isnan(a) for a in ordinary["validation"]["acc"] + ordinary["validation"]["acc_task_il"])
    # A selection job evaluates the validation splits only: no held-out classes, no eval sets, no second row.
    selection = diverged_record(spec, SimpleNamespace(scenario=scenario, evaluate_on="validation",
                                                      has_validation=True, device="cpu"), 1, {"task": 1})
    assert sorted(selection) == ["acc", "acc_task_il", "after_task", "diverged", "evaluated_on", "provenance", "top5"]
    assert selection["evaluated_on"] == "validation"
