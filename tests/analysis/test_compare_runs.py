"""Cross-run CKA through its job: a run against itself is 1 per layer; against its frozen counterpart the frozen
backbone layers stay put while the trained run's move away; default pairs come from the grid."""

import copy
import json

import pytest

from clgrid import config as cl
from clgrid import jobs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from clgrid.inprocess import validated
    from tests.conftest import DEFAULT_CONFIG, SCHEMA

    config = copy.deepcopy(validated(DEFAULT_CONFIG, SCHEMA))
    bench = config["benchmarks"]["split_digits"]
    config["benchmarks"] = {"split_digits": {**bench, "n_tasks": 2, "train": {**bench["train"], "epochs": 3}}}
    config["methods"] = ["naive", "naive_frozen"]
    config["variants"] = {"naive_frozen": {"method": "naive", "params": {"freeze": "all"},
                                           "resolved_params": {"freeze": "all", "freeze_k": 1, "lr_scale": 1.0}}}
    config["analysis"]["n_samples"] = 200
    config["analysis"]["cka_batch_size"] = 100
    root = tmp_path_factory.mktemp("compare")
    data, scenario = str(root / "digits.npz"), str(root / "s.json")
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), data)
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), [data], scenario)
    jobs.init_model(cl.init_spec(config, "split_digits", "mlp", 0), scenario, str(root / "init.pt"))
    states = {}
    for method in config["methods"]:
        spec = cl.run_spec(config, "split_digits", "mlp", method, 0)
        prev = str(root / "init.pt")
        states[method] = []
        for t in range(2):
            out = str(root / f"{method}_task{t}.pt")
            jobs.train(spec, scenario, [data], prev, t, out, str(root / f"{method}_task{t}.json"))
            states[method].append(out)
            prev = out
    return config, root, data, scenario, states


def _compare(two_runs, a, b):
    config, root, data, scenario, states = two_runs
    out = root / f"{a}_vs_{b}.json"
    jobs.compare_runs(cl.analysis_spec(config, "split_digits", "mlp", a, 0),
                      cl.analysis_spec(config, "split_digits", "mlp", b, 0), scenario, [data], states[a], states[b],
                      str(out))
    return json.loads(out.read_text())


def test_a_run_against_itself_is_one_per_layer(two_runs):
    result = _compare(two_runs, "naive", "naive")
    assert result["layers"] == ["backbone.block1", "backbone.block2", "head"]
    for layer, values in result["cka_per_layer"].items():
        assert values == pytest.approx([1.0, 1.0], abs=1e-9), layer


def test_trained_vs_frozen_backbone_diverges(two_runs):
    result = _compare(two_runs, "naive", "naive_frozen")
    assert result["run"] == "split_digits/mlp/naive/s0" and result["other"] == "split_digits/mlp/naive_frozen/s0"
    first = result["cka_per_layer"]["backbone.block1"]
    assert all(v < 0.999 for v in first)  # the trained backbone moved away from the frozen one
    assert len(result["cka_layer_maps"]) == 2 and len(result["cka_layer_maps"][0]) == 3


def test_default_pairs_are_frozen_counterparts(two_runs):
    config = two_runs[0]
    assert cl.cross_run_pairs(config) == [("naive", "naive_frozen")]
    config = copy.deepcopy(config)
    config["analysis"]["cross_run_pairs"] = [["naive_frozen", "naive"]]
    assert cl.cross_run_pairs(config) == [("naive_frozen", "naive")]
