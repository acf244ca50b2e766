"""The typed job specs (clgrid.spec) carry every shipped config's specs to the jobs unchanged: the JSON the rules
pass, parsed into the typed object and written back, is the same text byte for byte, with the same config hash."""

import json

import pytest
import yaml

from clgrid import config as cl
from clgrid.inprocess import validated
from clgrid.io import config_hash
from clgrid.spec import DatasetSpec, RunSpec, ScenarioSpec
from tests.conftest import REPO, SCHEMA

CONFIGS = sorted([REPO / "config" / "config.yaml", *(REPO / "config" / "experiments").glob("*.yaml"),
                  *(REPO / "tests" / "data" / "good_configs").glob("*.yaml")])


def as_json(spec):
    """What common.smk's ``as_json`` writes into every rule's --spec."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def shipped(path, tmp_path):
    """A shipped config, validated as the Snakefile does; a dataset folder the user sets (ImageNet) is an empty
    stand-in folder, as tests/test_experiments.py gives it."""
    config = yaml.safe_load(path.read_text())
    for name, options in (config.get("datasets") or {}).items():
        if "path" in options:
            options["path"] = str(tmp_path / name)
            (tmp_path / name).mkdir()
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(config))
    return validated(copy, SCHEMA)


def every_spec(config):
    """(typed class, spec dict) of every job the config's DAG plans that receives a spec."""
    for name in {d for b in config["benchmarks"] for d in cl.datasets_of(config, b)}:
        yield DatasetSpec, cl.dataset_spec(config, name)
    for bench in config["benchmarks"]:
        yield ScenarioSpec, cl.scenario_spec(config, bench)
        for backbone in config["backbones"]:
            for seed in config["seeds"]:
                yield RunSpec, cl.init_spec(config, bench, backbone, seed)
    for run in cl.runs(config):
        yield RunSpec, cl.run_spec(config, run.benchmark, run.backbone, run.method, run.seed)
        yield RunSpec, cl.analysis_spec(config, run.benchmark, run.backbone, run.method, run.seed)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_spec_of_every_shipped_config_round_trips_byte_for_byte(path, tmp_path):
    config = shipped(path, tmp_path)
    n = 0
    for kind, spec in every_spec(config):
        text = as_json(spec)
        typed = kind.from_json(json.loads(text))
        assert typed.json_text() == text
        assert typed.config_hash == config_hash(spec)
        n += 1
    assert n > len(cl.runs(config))  # the runs' specs and the shared jobs' specs were all checked


def test_a_key_no_field_knows_is_refused_not_dropped():
    spec = {"benchmark": "b", "benchmark_cfg": {}, "backbone": "mlp", "backbone_cfg": {"arch": "mlp"}, "seed": 0,
            "device": "cpu", "new_setting": 1}
    with pytest.raises(ValueError, match="new_setting"):
        RunSpec.from_json(spec)


def test_absent_optional_keys_stay_absent_and_fields_read_as_attributes(default_config):
    init = RunSpec.from_json(cl.init_spec(default_config, "split_digits", "mlp", 0))
    assert "method" not in init.to_json() and init.train is None and init.train_settings == {}
    run = RunSpec.from_json(cl.run_spec(default_config, "split_digits", "mlp", "ewc", 1))
    assert (run.run_id, run.method_name, run.seed) == ("split_digits/mlp/ewc/s1", "ewc", 1)
    assert run.identity() == {"run": "split_digits/mlp/ewc/s1", "benchmark": "split_digits", "backbone": "mlp",
                              "method": "ewc", "seed": 1}
    with pytest.raises(AttributeError):
        run.seed = 2  # frozen
