"""The schema rejects bad configs before any job runs, naming the field; defaults are filled in."""

import copy

import pytest
import yaml
from snakemake.utils import validate

from clgrid import config as cl
from tests.conftest import DEFAULT_CONFIG, SCHEMA


def _raw():
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def _mutate(edit):
    config = _raw()
    edit(config)
    return config


BAD = {
    "unknown method": (lambda c: c["methods"].append("ewx"), ["unknown method 'ewx' at methods[5]", "naive",
                                                             "or a variant defined under variants"]),
    "unknown dataset": (lambda c: c["benchmarks"]["split_digits"].update(dataset="mnits"),
                        ["unknown dataset 'mnits'", "valid: ", "cifar10", "npz: path/to/file.npz"]),
    "unknown backbone": (lambda c: c["backbones"]["mlp"].update(arch="resnet9000"),
                         ["'resnet9000' is not one of", "['arch']"]),
    "negative learning rate": (lambda c: c["benchmarks"]["split_digits"]["train"].update(lr=-0.1),
                               ["-0.1 is less than or equal to the minimum of 0", "['train']['lr']"]),
    "missing field": (lambda c: c["benchmarks"]["permuted_digits"].pop("train"),
                      ["'train' is a required property", "['permuted_digits']"]),
    "missing n_tasks": (lambda c: c["benchmarks"]["permuted_digits"].pop("n_tasks"),
                        ["benchmarks.permuted_digits.n_tasks is required"]),
    "bad variant parameter": (lambda c: c.update(methods=["er_5"], variants={"er_5": {
        "method": "replay", "params": {"buffer_sise": 5}}}), ["variants.er_5 (replay)", "'buffer_sise' was unexpected"]),
    "variant of unknown method": (lambda c: c.update(variants={"x": {"method": "rehearsal"}}),
                                  ["'rehearsal' is not one of"]),
    "class order not a permutation": (lambda c: c["benchmarks"]["split_digits"].update(class_order=[0, 1, 2]),
                                      ["benchmarks.split_digits.class_order must be a permutation of 0..9"]),
    "misspelled hyperparameter": (lambda c: c["method_params"]["ewc"].update(ewc_lamda=5),
                                  ["'ewc_lamda' was unexpected", "['ewc']"]),
    "bad device": (lambda c: c.update(device="gpu"), ["'gpu' does not match", "['device']"]),
    "no seeds": (lambda c: c.update(seeds=[]), ["should be non-empty", "['seeds']"]),
}


def _validate_and_check(config):
    validate(config, str(SCHEMA))
    cl.check_config(config, validate=lambda trial: validate(trial, str(SCHEMA)))


@pytest.mark.parametrize("case", sorted(BAD))
def test_schema_rejects_bad_config_naming_the_field(case):
    edit, expected = BAD[case]
    with pytest.raises(Exception) as err:
        _validate_and_check(_mutate(edit))
    for text in expected:
        assert text in str(err.value), f"{case}: {text!r} not in {err.value}"


def test_defaults_are_filled(default_config):
    assert default_config["device"] == "auto"
    assert default_config["method_params"]["replay"]["replay_batch_size"] is None
    assert default_config["benchmarks"]["permuted_digits"]["class_order"] == "sorted"
    assert default_config["benchmarks"]["split_digits"]["train"]["weight_decay"] == 0


def test_uneven_class_split_fails_check_with_valid_choices(default_config):
    config = copy.deepcopy(default_config)
    config["benchmarks"]["split_digits"]["n_tasks"] = 3
    with pytest.raises(cl.ConfigError, match=r"benchmarks.split_digits.n_tasks = 3 .* valid: \[1, 2, 5, 10\]"):
        cl.check_config(config)


def test_grid_and_specs(default_config):
    runs = cl.runs(default_config)
    assert len(runs) == 2 * 1 * 5 * 3
    assert runs[0].id == "split_digits/mlp/naive/s0"
    a = cl.run_spec(default_config, "split_digits", "mlp", "ewc", 0)
    b = cl.run_spec(default_config, "split_digits", "mlp", "naive", 0)
    # Methods of a seed share their initial weights: the init spec leaves the method out.
    init = cl.init_spec(default_config, "split_digits", "mlp", 0)
    assert {k: a[k] for k in init} == {k: b[k] for k in init} == init
    assert a["method_params"] == {"ewc_lambda": 100, "fisher_samples": None, "fisher_weighting": "none", "freeze": "none",
                                  "freeze_k": 1, "lr_scale": 1.0}


def test_schema_defaults_equal_each_methods_own_defaults(default_config):
    # The schema documents a method's hyperparameters for users; the class's ``defaults`` serve code and tests.
    # Compared as validation fills them in, so blocks shared through $ref (kd_params) count too.
    from clgrid.methods import METHODS
    from clgrid.methods.base import COMMON_DEFAULTS

    for name, cls in METHODS.items():
        filled = default_config["method_params"][name]
        assert {k: filled[k] for k in COMMON_DEFAULTS} == COMMON_DEFAULTS, name
        assert {k: v for k, v in filled.items() if k not in COMMON_DEFAULTS} == cls.defaults, name


def test_cli_lists_every_method_with_its_defaults(capsys):
    from clgrid.cli import main
    from clgrid.methods import METHODS

    main(["methods"])
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in METHODS) and "'ewc_lambda': 100.0" in out


def test_variants_resolve_params_and_training_overrides(default_config):
    config = copy.deepcopy(default_config)
    config["methods"] = ["naive", "er_500"]
    config["variants"] = {"er_500": {"method": "replay", "params": {"buffer_size": 500}, "train": {"lr": 0.1}}}
    cl.check_config(config, validate=lambda trial: validate(trial, str(SCHEMA)))
    spec = cl.run_spec(config, "split_digits", "mlp", "er_500", 0)
    assert spec["method"] == "er_500" and spec["method_name"] == "replay"
    assert spec["method_params"]["buffer_size"] == 500 and spec["method_params"]["buffer_policy"] == "class_balanced"
    assert spec["train"]["lr"] == 0.1 and spec["train"]["batch_size"] == 32
    assert [r.id for r in cl.runs(config)][:2] == ["split_digits/mlp/naive/s0", "split_digits/mlp/naive/s1"]
    assert cl.run_spec(config, "split_digits", "mlp", "naive", 0)["train"]["lr"] == 0.05  # others untouched


def _swept(default_config, sweeps, methods=("naive", "ewc", "replay")):
    config = copy.deepcopy(default_config)
    config["methods"] = list(methods)
    config["sweeps"] = sweeps
    cl.check_config(config, validate=lambda trial: validate(trial, str(SCHEMA)))
    return config


def test_sweeps_expand_to_the_product_named_by_their_values(default_config):
    config = _swept(default_config, {"ewc": {"params": {"ewc_lambda": [1, 1000.0]}, "train": {"lr": [0.01, 0.1]}},
                                     "replay": {"params": {"buffer_size": [50, 500]}}})
    assert config["methods"] == ["naive", "ewc~ewc_lambda=1,lr=0.01", "ewc~ewc_lambda=1,lr=0.1",
                                 "ewc~ewc_lambda=1000,lr=0.01", "ewc~ewc_lambda=1000,lr=0.1",
                                 "replay~buffer_size=50", "replay~buffer_size=500"]
    spec = cl.run_spec(config, "split_digits", "mlp", "ewc~ewc_lambda=1000,lr=0.1", 0)
    assert spec["method_name"] == "ewc" and spec["method_params"]["ewc_lambda"] == 1000.0
    assert spec["train"]["lr"] == 0.1 and spec["train"]["batch_size"] == 32
    assert cl.sweep_points(config)["replay~buffer_size=500"] == {"base": "replay", "values": {"buffer_size": 500}}
    assert len(cl.runs(config)) == 2 * 7 * 3


def test_adding_a_sweep_value_adds_only_its_runs(default_config):
    small = _swept(default_config, {"replay": {"params": {"buffer_size": [50, 200]}}})
    large = _swept(default_config, {"replay": {"params": {"buffer_size": [50, 200, 500]}}})
    before = {r.id: cl.run_spec(small, r.benchmark, r.backbone, r.method, r.seed) for r in cl.runs(small)}
    after = {r.id: cl.run_spec(large, r.benchmark, r.backbone, r.method, r.seed) for r in cl.runs(large)}
    assert set(after) - set(before) == {f"{b}/mlp/replay~buffer_size=500/s{s}" for b in ("split_digits",
                                                                                          "permuted_digits")
                                         for s in (0, 1, 2)}
    assert all(after[k] == v for k, v in before.items())  # same specs: Snakemake reruns nothing that existed


def test_sweep_of_a_variant_and_bad_sweeps(default_config):
    config = copy.deepcopy(default_config)
    config["methods"] = ["er"]
    config["variants"] = {"er": {"method": "replay", "params": {"buffer_policy": "reservoir"}, "train": {"lr": 0.01}}}
    config["sweeps"] = {"er": {"params": {"buffer_size": [10, 20]}}}
    cl.check_config(config, validate=lambda trial: validate(trial, str(SCHEMA)))
    spec = cl.run_spec(config, "split_digits", "mlp", "er~buffer_size=20", 0)
    assert spec["method_params"]["buffer_policy"] == "reservoir" and spec["method_params"]["buffer_size"] == 20
    assert spec["train"]["lr"] == 0.01
    with pytest.raises(cl.ConfigError, match=r"sweeps.ewc.params.ewc_lamda: ewc has no hyperparameter 'ewc_lamda'"):
        _swept(default_config, {"ewc": {"params": {"ewc_lamda": [1, 2]}}})
    with pytest.raises(cl.ConfigError, match=r"sweeps.si: 'si' is not in methods"):
        _swept(default_config, {"si": {"params": {"c": [1, 2]}}})
    with pytest.raises(cl.ConfigError, match=r"(?s)variants.replay~buffer_size=0 \(replay\).*less than the minimum of 1"):
        _swept(default_config, {"replay": {"params": {"buffer_size": [0, 5]}}})
