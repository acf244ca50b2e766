"""The schema rejects bad configs before any job runs, naming the field; defaults are filled in."""

import copy

import pytest
import yaml

from clgrid import config as cl
from clgrid.config.schema import validate
from tests.conftest import DEFAULT_CONFIG, SCHEMA


def _raw():
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def _mutate(edit):
    config = _raw()
    edit(config)
    return config


BAD = {
    # case: (edit of the default config, texts the message must hold: field, value, what is allowed)
    "unknown method": (lambda c: c["methods"].append("ewx"), ["field:   methods[5]", "value:   'ewx'",
                                                             "did you mean 'ewc'?", "naive",
                                                             "or a variant defined under variants"]),
    "unknown dataset": (lambda c: c["benchmarks"]["split_digits"].update(dataset="mnits"),
                        ["field:   benchmarks.split_digits.dataset", "unknown dataset 'mnits'", "cifar10",
                         "npz: path/to/file.npz"]),
    "unknown backbone": (lambda c: c["backbones"]["mlp"].update(arch="resnet9000"),
                         ["field:   backbones.mlp.arch", "value:   'resnet9000'",
                          "allowed: one of: clip, cnn, flava, mlp, resnet18, resnet50, vit_b_16"]),
    "negative learning rate": (lambda c: c["benchmarks"]["split_digits"]["train"].update(lr=-0.1),
                               ["field:   benchmarks.split_digits.train.lr", "value:   -0.1",
                                "allowed: a number > 0", "meaning: learning rate"]),
    "missing field": (lambda c: c["benchmarks"]["permuted_digits"].pop("train"),
                      ["field:   benchmarks.permuted_digits.train", "value:   (not set)",
                       "required key 'train' is missing from benchmarks.permuted_digits"]),
    "missing n_tasks": (lambda c: c["benchmarks"]["permuted_digits"].pop("n_tasks"),
                        ["field:   benchmarks.permuted_digits.n_tasks", "scenario permuted needs n_tasks"]),
    "bad variant parameter": (lambda c: c.update(methods=["er_5"], variants={"er_5": {
        "method": "replay", "params": {"buffer_sise": 5}}}), ["field:   variants.er_5.params.buffer_sise",
                                                              "unknown key 'buffer_sise' in replay's hyperparameters",
                                                              "did you mean 'buffer_size'?"]),
    "variant of unknown method": (lambda c: c.update(variants={"x": {"method": "rehearsal"}}),
                                  ["field:   variants.x.method", "value:   'rehearsal'", "allowed: one of: agem"]),
    "class order not a permutation": (lambda c: c["benchmarks"]["split_digits"].update(class_order=[0, 1, 2]),
                                      ["field:   benchmarks.split_digits.class_order",
                                       "not a permutation of the 10 classes of 'digits' (missing 3, 4, 5"]),
    "misspelled hyperparameter": (lambda c: c["method_params"]["ewc"].update(ewc_lamda=5),
                                  ["field:   method_params.ewc.ewc_lamda", "unknown key 'ewc_lamda'",
                                   "allowed: keys ewc_lambda, fisher_samples"]),
    "bad device": (lambda c: c.update(device="gpu"), ["field:   device", "value:   'gpu'",
                                                      "meaning: auto (a CUDA GPU when present"]),
    "no seeds": (lambda c: c.update(seeds=[]), ["field:   seeds", "value:   []", "too few items"]),
    "infinite weight": (lambda c: c["method_params"]["ewc"].update(ewc_lambda=float("inf")),
                        ["field:   method_params.ewc.ewc_lambda", "value:   .inf", "allowed: a finite number"]),
    "buffer larger than the data": (lambda c: c["method_params"]["replay"].update(buffer_size=7000),
                                    ["field:   method_params.replay.buffer_size",
                                     "more than the 1347 training samples of benchmark 'split_digits'",
                                     "allowed: an integer in [1, 1347]"]),
}


def _validate_and_check(config):
    cl.check(config, SCHEMA, files=[DEFAULT_CONFIG])


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_error_names_field_value_and_what_is_allowed(case):
    edit, expected = BAD[case]
    with pytest.raises(cl.ConfigError) as err:
        _validate_and_check(_mutate(edit))
    message = str(err.value)
    assert message.startswith("Config error in config/config.yaml") or message.startswith(
        f"Config error in {DEFAULT_CONFIG}"), message
    for text in expected:
        assert text in message, f"{case}: {text!r} not in {message}"
    assert "Failed validating" not in message and "schema[" not in message  # no JSON-schema dump


def test_defaults_are_filled(default_config):
    assert default_config["device"] == "auto"
    assert default_config["method_params"]["replay"]["replay_batch_size"] is None
    assert default_config["benchmarks"]["permuted_digits"]["class_order"] == "sorted"
    assert default_config["benchmarks"]["split_digits"]["train"]["weight_decay"] == 0


def test_uneven_class_split_fails_check_with_valid_choices(default_config):
    config = copy.deepcopy(default_config)
    config["benchmarks"]["split_digits"]["n_tasks"] = 3
    with pytest.raises(cl.ConfigError) as err:
        cl.check_config(config)
    assert err.value.path == "benchmarks.split_digits.n_tasks" and err.value.value == 3
    assert err.value.allowed == "a divisor of 10: 1, 2, 5, 10"


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
    assert all(f"\n{name} " in out for name in METHODS) and "'ewc_lambda': 100," in out  # the declared default, as the schema fills it


def test_variants_resolve_params_and_training_overrides(default_config):
    config = copy.deepcopy(default_config)
    config["methods"] = ["naive", "er_500"]
    config["variants"] = {"er_500": {"method": "replay", "params": {"buffer_size": 500}, "train": {"lr": 0.1}}}
    cl.check_config(config, validate=lambda trial: validate(trial, SCHEMA))
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
    cl.check_config(config, validate=lambda trial: validate(trial, SCHEMA))
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
    cl.check_config(config, validate=lambda trial: validate(trial, SCHEMA))
    spec = cl.run_spec(config, "split_digits", "mlp", "er~buffer_size=20", 0)
    assert spec["method_params"]["buffer_policy"] == "reservoir" and spec["method_params"]["buffer_size"] == 20
    assert spec["train"]["lr"] == 0.01
    with pytest.raises(cl.ConfigError, match=r"(?s)field: +sweeps.ewc.params.ewc_lamda\n.*ewc has no "
                                             r"hyperparameter 'ewc_lamda'"):
        _swept(default_config, {"ewc": {"params": {"ewc_lamda": [1, 2]}}})
    with pytest.raises(cl.ConfigError, match=r"(?s)field: +sweeps.si\n.*'si' is not a run in methods"):
        _swept(default_config, {"si": {"params": {"c": [1, 2]}}})
    # The point of the sweep that is out of range, by its index in the list the user wrote.
    with pytest.raises(cl.ConfigError, match=r"(?s)field: +sweeps.replay.params.buffer_size\[1\]\n +value: +0\n"
                                             r".*allowed: an integer >= 1"):
        _swept(default_config, {"replay": {"params": {"buffer_size": [5, 0]}}})
