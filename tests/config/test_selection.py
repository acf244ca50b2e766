"""A sweep with ``select`` (clgrid.config.selection): the runs it makes, the specs they receive, and the mistakes
refused before any job runs."""

import copy

import pytest

from clgrid import config as cl
from clgrid.config import ConfigError, check
from clgrid.config import selection
from tests.conftest import SCHEMA

BASE = {
    "seeds": [0, 1, 2],
    "benchmarks": {"split_digits": {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 5,
                                    "validation": {"fraction": 0.1},
                                    "train": {"optimizer": "sgd", "lr": 0.05, "epochs": 1, "batch_size": 32}}},
    "backbones": {"mlp": {"arch": "mlp", "hidden": [32]}},
    "methods": ["naive", "ewc", "replay"],
    "sweeps": {"ewc": {"params": {"ewc_lambda": [1, 10]}, "select": {"protocol": "whole_stream", "test_rows": True,
                                                                    "seeds": [0]}},
               "replay": {"train": {"lr": [0.01, 0.1]}, "select": {"protocol": "first_k", "k": 2}}},
}


def checked(edit=lambda c: None):
    config = copy.deepcopy(BASE)
    edit(config)
    check(config, SCHEMA)
    return config


def test_a_selection_replaces_the_run_by_its_final_run_and_keeps_candidates_out_of_the_grid():
    config = checked()
    assert config["methods"] == ["naive", "ewc~selected", "replay~selected"]
    runs = {run.method for run in cl.runs(config)}
    assert runs == {"naive", "ewc~selected", "replay~selected"}  # the tables' runs
    candidates = [run.id for run in selection.candidate_runs(config)]
    assert candidates == [
        "split_digits/mlp/ewc~val~ewc_lambda=1/s0", "split_digits/mlp/ewc~val~ewc_lambda=10/s0",  # select.seeds
        *[f"split_digits/mlp/ewc~test~ewc_lambda={v}/s{s}" for v in (1, 10) for s in (0, 1, 2)],  # study's seeds
        *[f"split_digits/mlp/replay~first2~lr={v}/s{s}" for v in ("0.01", "0.1") for s in (0, 1, 2)]]
    assert selection.selection_files(config) == ["results/selection/split_digits/mlp/ewc/selection.json",
                                                 "results/selection/split_digits/mlp/replay/selection.json"]
    assert cl.sweep_points(config) == {}  # no plain sweep: no sweep figure of test rows


def test_the_specs_say_who_is_evaluated_on_what():
    config = checked()
    candidate = cl.run_spec(config, "split_digits", "mlp", "ewc~val~ewc_lambda=10", 0)
    assert candidate["evaluate_on"] == "validation" and candidate["feature_cache"] is False
    assert candidate["method_params"]["ewc_lambda"] == 10
    assert candidate["selection"] == {"role": "candidate", "base": "ewc", "protocol": "whole_stream",
                                      "values": {"ewc_lambda": 10}}
    first_k = cl.run_spec(config, "split_digits", "mlp", "replay~first2~lr=0.1", 1)
    assert first_k["train"]["lr"] == 0.1 and first_k["selection"]["k"] == 2
    assert selection.run_tasks(config, "split_digits", "replay~first2~lr=0.1") == 2
    assert selection.run_tasks(config, "split_digits", "replay~selected") == 5
    final = cl.run_spec(config, "split_digits", "mlp", "replay~selected", 0)
    assert "evaluate_on" not in final
    assert final["selection"] == {"role": "final", "base": "replay", "protocol": "first_k", "k": 2,
                                  "file": "results/selection/split_digits/mlp/replay/selection.json"}
    test_row = cl.run_spec(config, "split_digits", "mlp", "ewc~test~ewc_lambda=1", 0)
    assert "evaluate_on" not in test_row and "selection" not in test_row
    # a run outside any selection: its spec (and config hash) as before
    assert set(cl.run_spec(config, "split_digits", "mlp", "naive", 0)) == {
        "benchmark", "benchmark_cfg", "backbone", "backbone_cfg", "seed", "device", "train", "method", "method_name",
        "method_params", "feature_cache"}


def test_per_task_candidates_halve_the_stability_weight():
    def per_task(c):
        c["sweeps"] = {"ewc": {"train": {"lr": [0.1, 0.01]}, "select": {"protocol": "per_task", "stability": "ewc_lambda",
                                                                       "start": 800, "halvings": 3}}}
    config = checked(per_task)
    record = selection.finals(config)["ewc~selected"]
    assert record["plasticity_candidates"] == ["ewc~pt~lr=0.1", "ewc~pt~lr=0.01"]
    assert record["stability_candidates"] == [f"ewc~pt~ewc_lambda={w}" for w in (800, 400, 200, 100)]
    assert record["weights"] == [800.0, 400.0, 200.0, 100.0] and record["fraction"] == 0.8
    plasticity = cl.run_spec(config, "split_digits", "mlp", "ewc~pt~lr=0.01", 0)
    assert plasticity["method_params"]["ewc_lambda"] == 0.0 and plasticity["train"]["lr"] == 0.01
    stability = cl.run_spec(config, "split_digits", "mlp", "ewc~pt~ewc_lambda=200", 2)
    assert stability["selection"]["lr_from"] == \
        "results/selection/split_digits/mlp/ewc/s2/task{task}/plasticity.json"


@pytest.mark.parametrize("edit, field, words", [
    (lambda c: c["benchmarks"]["split_digits"].pop("validation"), "sweeps.ewc.select", "validation: {fraction"),
    (lambda c: c["sweeps"]["replay"]["select"].update(k=5), "sweeps.replay.select.k", "leaves no task"),
    (lambda c: c["sweeps"]["replay"]["select"].pop("k"), "sweeps.replay.select", "needs k"),
    (lambda c: c["sweeps"]["ewc"]["select"].update(k=2), "sweeps.ewc.select.k", "first_k protocol"),
    (lambda c: c["sweeps"]["ewc"]["select"].update(metric="acc_test"), "sweeps.ewc.select.metric",
     "not a metric of a validation"),
    (lambda c: c["sweeps"]["ewc"]["select"].update(protocol="best_of_test"), "sweeps.ewc.select.protocol", ""),
    (lambda c: c["sweeps"]["ewc"]["select"].update(protocol="per_task", stability="ewc_lambda"), "sweeps.ewc",
     "sweeps the learning rate"),
    (lambda c: c["sweeps"].update(ewc={"train": {"lr": [0.1]}, "select": {"protocol": "per_task",
                                                                          "stability": "lambda"}}),
     "sweeps.ewc.select.stability", "no hyperparameter 'lambda'"),
    (lambda c: c["sweeps"]["ewc"]["select"].update(halvings=2), "sweeps.ewc.select.halvings", "per_task protocol"),
])
def test_bad_selections_are_refused_before_any_job(edit, field, words):
    with pytest.raises(ConfigError) as err:
        checked(edit)
    text = str(err.value)
    assert field in text and words in text, text


def test_the_in_process_runner_refuses_a_selected_run(tmp_path):
    from clgrid.inprocess import run_cell

    with pytest.raises(ValueError, match="run it with snakemake"):
        run_cell(checked(), "split_digits", "mlp", "ewc~selected", 0, tmp_path)
