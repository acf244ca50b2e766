"""The one error form: field path, value, what is allowed, the field's meaning; habits read as meant."""

import copy
import math

import pytest
import yaml

from clgrid.config import ConfigError, check
from clgrid.config.errors import MISSING, field_path, parse_path, show
from clgrid.config.messages import describe
from clgrid.config.schema import load_schema, validate
from clgrid.config.yaml_lint import check_finite, coerce_numbers, lint_yaml, source_of
from tests.conftest import DEFAULT_CONFIG, REPO, SCHEMA

SHIPPED = [DEFAULT_CONFIG, *sorted((REPO / "config" / "experiments").glob("*.yaml")),
           *sorted(p for p in (REPO / "tests" / "fixtures").glob("*.yaml"))]

MINIMAL = """\
seeds: [0]
benchmarks:
  split_digits:
    dataset: digits
    scenario: class_incremental
    n_tasks: 5
    train: {lr: 0.05, epochs: 1, batch_size: 32}
backbones:
  mlp: {arch: mlp, hidden: [32, 32]}
methods: [naive, ewc]
"""


def _minimal(**top):
    config = yaml.safe_load(MINIMAL)
    config.update(top)
    return config


def _error(config, files=()):
    with pytest.raises(ConfigError) as err:
        check(config, SCHEMA, files=files)
    return err.value


def test_paths_are_written_as_a_person_writes_them():
    assert field_path(["method_params", "ewc", "ewc_lambda"]) == "method_params.ewc.ewc_lambda"
    assert field_path(["methods", 2]) == "methods[2]"
    assert field_path(["analysis", "cross_run_pairs", 0, 1]) == "analysis.cross_run_pairs[0][1]"
    assert parse_path("analysis.cross_run_pairs[0][1]") == ("analysis", "cross_run_pairs", 0, 1)


def test_values_are_shown_as_yaml_spells_them():
    assert show("0.1") == "'0.1'"  # visibly a string, not a number
    assert show(float("inf")) == ".inf" and show(float("-inf")) == "-.inf" and show(math.nan) == ".nan"
    assert show(True) == "true" and show(None) == "null"
    assert show({"lr": 0.1, "opt": "sgd"}) == "{lr: 0.1, opt: 'sgd'}"
    assert show(MISSING) == "(not set)"


def test_scientific_notation_strings_become_floats_everywhere():
    config = yaml.safe_load("a: 1e-3\nb: [5E2, '-2.5e-1', 1.0e-3]\nc: {d: 1e5, 1e3: keep}\ne: e5\nf: 1e\ng: ewc\n"
                            "h: '0.1'\n")
    assert isinstance(config["a"], str)  # what PyYAML does (YAML 1.1 wants a dot)
    coerce_numbers(config)
    assert config["a"] == 0.001 and config["b"] == [500.0, -0.25, 0.001] and config["c"]["d"] == 100000.0
    assert "1e3" in config["c"]  # keys are names, never coerced
    assert (config["e"], config["f"], config["g"], config["h"]) == ("e5", "1e", "ewc", "0.1")


def test_non_finite_numbers_are_refused_with_their_path():
    with pytest.raises(ConfigError) as err:
        check_finite({"benchmarks": {"b": {"train": {"lr": float("nan")}}}, "seeds": [0]})
    assert err.value.path == "benchmarks.b.train.lr" and err.value.allowed == "a finite number"


def test_validation_fills_the_same_defaults_as_snakemake(tmp_path):
    # Snakemake's validate is the reference: the workflow used it before, and users read its defaults in the schema.
    # It reads a file: the schema as loaded, with what the code declares added (arch options, method blocks).
    from snakemake.utils import validate as snakemake_validate

    built = tmp_path / "config.schema.yaml"
    built.write_text(yaml.safe_dump(load_schema(str(SCHEMA)), allow_unicode=True))
    for path in SHIPPED:
        config = yaml.safe_load(path.read_text())
        ours, theirs = copy.deepcopy(config), copy.deepcopy(config)
        validate(ours, SCHEMA)
        snakemake_validate(theirs, str(built))
        assert ours == theirs, path.name


def test_filled_defaults_are_not_shared_between_configs():
    a, b = _minimal(), _minimal()
    validate(a, SCHEMA)
    a["variants"]["x"] = {"method": "naive"}
    validate(b, SCHEMA)
    assert b["variants"] == {}


def test_the_one_form_worked_example(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(MINIMAL.replace("lr: 0.05", "lr: -0.1"))
    err = _error(yaml.safe_load(path.read_text()), files=[path])
    assert str(err) == (
        f"Config error in {path}, line 7:\n"
        "  field:   benchmarks.split_digits.train.lr\n"
        "  value:   -0.1\n"
        "  problem: out of range\n"
        "  allowed: a number > 0\n"
        "  meaning: learning rate (each method's lr_scale multiplies it); 1e-3 and 1.0e-3 both read as 0.001"
    )


@pytest.mark.parametrize("edit, path, allowed", [
    # (config edit, field, allowed) for each schema keyword the message translates
    (lambda c: c["benchmarks"]["split_digits"]["train"].update(optimizer="adamw"),
     "benchmarks.split_digits.train.optimizer", "one of: sgd, adam"),
    (lambda c: c["benchmarks"]["split_digits"]["train"].update(momentum=1),
     "benchmarks.split_digits.train.momentum", "a number >= 0 and < 1"),
    (lambda c: c.update(method_params={"wise_ft": {"alpha": 2}}), "method_params.wise_ft.alpha", "a number in [0, 1]"),
    (lambda c: c.update(method_params={"ewc": {"fisher_samples": 0}}), "method_params.ewc.fisher_samples",
     "an integer >= 1, or null"),
    (lambda c: c["benchmarks"]["split_digits"].update(class_order="randm"),
     "benchmarks.split_digits.class_order", "one of: sorted, random, or a list (each item an integer >= 0)"),
    (lambda c: c.update(epoch=5), "epoch", "keys analysis, backbones, benchmarks"),
    (lambda c: c.update(method_params={"kd_ema": {"ema_ration": 0.9}}), "method_params.kd_ema.ema_ration",
     "keys anneal_start, anneal_steps, cls_only, ema_ratio"),  # keys of a block combined with allOf
    (lambda c: c["backbones"]["mlp"].update(width=3), "backbones.mlp.width", "keys arch, head, head_hidden, hidden"),
    (lambda c: c["benchmarks"].update({"split-x": c["benchmarks"]["split_digits"]}), "benchmarks.split-x",
     "a name matching ^[A-Za-z0-9_]+$"),
    (lambda c: c["benchmarks"]["split_digits"]["train"].pop("epochs"), "benchmarks.split_digits.train.epochs",
     "epochs or iterations"),
    (lambda c: c["benchmarks"]["split_digits"]["train"].update(lr="fast"), "benchmarks.split_digits.train.lr",
     "a number > 0"),
    (lambda c: c.update(method_params={"ewc": [1]}), "method_params.ewc", "a mapping"),  # not a crash
])
def test_schema_errors_translate_each_keyword(edit, path, allowed):
    config = _minimal()
    edit(config)
    err = _error(config)
    assert err.path == path and err.allowed.startswith(allowed), str(err)


def test_the_field_description_comes_from_the_schema_not_from_a_mixed_in_block():
    schema = load_schema(str(SCHEMA))
    assert describe(schema, ["method_params", "ewc", "ewc_lambda"]).startswith("λ of Kirkpatrick")
    assert describe(schema, ["method_params", "naive", "freeze_k"]).startswith("number of leading backbone")
    assert describe(schema, ["backbones", "any", "arch"]).startswith("mlp (flatten")  # through a $ref
    assert describe(schema, ["method_params", "ewc"]) is None  # not common_method_params' "options every ..."


def test_a_field_is_traced_to_the_last_file_that_sets_it_and_its_line(tmp_path):
    base, extra = tmp_path / "study.yaml", tmp_path / "data.yaml"
    base.write_text(MINIMAL)
    extra.write_text("# shared data\ndatasets:\n  digits:\n    npz: no/such.npz\n")
    assert source_of(("datasets", "digits", "npz"), [base, extra]) == f"{extra}, line 4"
    assert source_of(("benchmarks", "split_digits", "n_tasks"), [base, extra]) == f"{base}, line 6"
    assert source_of(("seeds",), [base], overrides={"seeds": [1]}) == "--config seeds"


def test_cross_field_errors_come_in_the_same_form():
    config = _minimal()
    config["benchmarks"]["split_digits"]["n_tasks"] = 3
    message = str(_error(config, files=[DEFAULT_CONFIG]))
    assert message.splitlines()[1:] == [
        "  field:   benchmarks.split_digits.n_tasks",
        "  value:   3",
        "  problem: does not split the 10 trained classes of 'digits' into equal tasks",
        "  allowed: a divisor of 10: 1, 2, 5, 10",
        "  meaning: tasks (dataset_sequence: the number of datasets)",
        "  fix:     set n_tasks to one of the allowed values",
    ]


def test_variant_and_sweep_errors_point_at_what_the_user_wrote():
    config = _minimal(methods=["naive", "er"], variants={"er": {"method": "replay", "train": {"lr": 0}}})
    err = _error(config)
    assert err.path == "variants.er.train.lr" and err.value == 0
    config = _minimal(methods=["er"], variants={"er": {"method": "replay", "params": {"buffer_size": 20}}},
                      sweeps={"er": {"params": {"replay_batch_size": [8, 0]}}})
    err = _error(config)
    assert err.path == "sweeps.er.params.replay_batch_size[1]" and err.value == 0
    assert err.description.startswith("buffer samples added to each batch")


def test_freeze_k_is_checked_against_each_backbone_and_each_variant():
    config = _minimal(backbones={"small": {"arch": "mlp", "hidden": [8]}, "cnn": {"arch": "cnn"}},
                      variants={"first2": {"method": "naive", "params": {"freeze": "first_k", "freeze_k": 2}}},
                      methods=["naive", "first2"])
    err = _error(copy.deepcopy(config))
    assert err.path == "variants.first2.params.freeze_k" and "backbone 'small' (mlp) has only 1 blocks" in err.problem
    config["backbones"].pop("small")
    check(config, SCHEMA)  # the cnn has block1, block2


def test_analysis_layers_accept_what_the_backbone_has():
    check(_minimal(analysis={"layers": ["backbone.block1.0", "backbone.flatten", "head", "backbone"]}), SCHEMA)
    err = _error(_minimal(analysis={"layers": ["backbone.stem"]}))
    assert err.path == "analysis.layers[0]" and "backbone.block1, backbone.block2" in err.allowed


def test_children_without_weights_listed_for_layer_checks_are_the_models_own():
    from clgrid.catalog import archs
    from clgrid.models import build_model, declared_blocks

    tiny_vit = {"image_size": 16, "patch_size": 8, "num_layers": 1, "num_heads": 1, "hidden_dim": 8, "mlp_dim": 8}
    for cfg in ({"arch": "mlp"}, {"arch": "cnn"}, {"arch": "resnet18", "width": 8},
                {"arch": "vit_b_16", "vit_config": tiny_vit}):
        net = build_model(cfg, [3, 16, 16], 4, load_weights=False)
        children = [name for name, _ in net.backbone.named_children()]
        listed = [*declared_blocks(cfg), *archs.get(cfg["arch"]).children_without_weights]
        assert sorted(children) == sorted(listed), cfg["arch"]


def test_buffers_are_checked_against_the_training_data():
    permuted = {"dataset": "digits", "scenario": "permuted", "n_tasks": 5,
                "train": {"lr": 0.05, "epochs": 1, "batch_size": 32}}
    config = _minimal(benchmarks={"p": permuted}, methods=["replay"], method_params={"replay": {"buffer_size": 6735}})
    check(config, SCHEMA)  # 5 permuted copies of digits' 1347 training images
    config = _minimal(benchmarks={"p": permuted}, methods=["replay"], method_params={"replay": {"buffer_size": 6736}})
    assert _error(config).allowed == "an integer in [1, 6735]"
    # max_per_class_train caps each class; imported arrays have no known size, so nothing is checked
    # (digits takes no options: the cap is shown on MNIST)
    split_mnist = {"dataset": "mnist", "scenario": "class_incremental", "n_tasks": 5,
                   "train": {"lr": 0.05, "epochs": 1, "batch_size": 32}}
    config = _minimal(benchmarks={"s": split_mnist}, methods=["gdumb"], method_params={"gdumb": {"memory_size": 201}},
                      datasets={"mnist": {"max_per_class_train": 20}})
    assert _error(config).allowed == "an integer in [1, 200]"


def test_digits_training_size_in_the_registry_is_the_prepared_one(tmp_path):
    import numpy as np

    from clgrid.data.datasets import DATASETS, prepare_digits

    prepare_digits(str(tmp_path / "digits.npz"))
    assert len(np.load(tmp_path / "digits.npz")["y_train"]) == DATASETS["digits"].n_train


def test_a_dataset_folder_is_needed_only_until_it_is_prepared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    split_mnist = {"dataset": "mnist", "scenario": "class_incremental", "n_tasks": 5,
                   "train": {"lr": 0.05, "epochs": 1, "batch_size": 32}}
    config = _minimal(benchmarks={"s": split_mnist}, datasets={"mnist": {"path": "raw/mnist"}})
    err = _error(copy.deepcopy(config))
    assert err.path == "datasets.mnist.path" and err.problem.startswith("no such folder: raw/mnist")
    (tmp_path / "results" / "data").mkdir(parents=True)
    (tmp_path / "results" / "data" / "mnist.npz").write_bytes(b"")
    check(config, SCHEMA)


def test_shipped_configs_pass(monkeypatch):
    # mtil_clip needs ImageNet (datasets.imagenet.path) and clip_mtil_tiny writes its arrays first.
    for path in SHIPPED:
        if path.stem in ("mtil_clip", "clip_mtil_tiny"):
            continue
        config = yaml.safe_load(path.read_text())
        if "benchmarks" in config:
            check(config, SCHEMA, files=[path])


# --- plan-time checks of what a job would refuse or misread (docs/config_checks.md) ---------------------------


@pytest.mark.parametrize("text, path, problem", [
    ("a: 1\nb: {c: 1, c: 2}\n", "b.c", "'c' is written twice in b (lines 2 and 2)"),
    ("on: {x: 1}\n", "on", "YAML 1.1 reads the key on as true"),
    ("a: {lr: 0,001}\n", "a.001", "a decimal comma"),
    ("a: {batch_size: 032}\n", "a.batch_size", "YAML 1.1 reads 032 as the octal number 26"),
    ("a: 10:00\n", "a", "base-60 number 600"),
    ("a:\n  weights:\n", "a.weights", "empty value: YAML reads it as null"),
    ("a: [1, '010', \"on\", 0, 0.5, 1e-3, 0x1F]\nb: 'no'\n", None, None),  # quoted, plain zero, floats, hex: fine
])
def test_yaml_habits_that_load_silently_are_named_with_file_and_line(tmp_path, text, path, problem):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(text)
    err = lint_yaml(config_file)
    if path is None:
        assert err is None, str(err)
        return
    assert err.path == path and problem in err.problem and err.source.startswith(f"{config_file}, line "), str(err)


def test_integer_fields_take_whole_numbers_only():
    config = _minimal(backbones={"mlp": {"arch": "mlp", "hidden": [32.0]}})
    err = _error(config)
    assert err.path == "backbones.mlp.hidden[0]" and "(write 32)" in err.problem
    config = _minimal()
    config["benchmarks"]["split_digits"]["train"]["lr"] = 1  # a number field takes an integer
    check(config, SCHEMA)


def test_a_setting_shared_by_several_runs_is_refused_only_when_no_run_uses_it():
    variants = {"kd_anneal": {"method": "kd_ema", "params": {"teacher": "anneal"}},
                "kd_swa": {"method": "kd_ema", "params": {"teacher": "swa"}}}
    config = _minimal(methods=["kd_anneal", "kd_swa"], variants=copy.deepcopy(variants),
                      method_params={"kd_ema": {"anneal_steps": 50}})
    check(config, SCHEMA)  # kd_anneal reads it
    config = _minimal(methods=["kd_swa"], variants=copy.deepcopy(variants), method_params={"kd_ema": {"anneal_steps": 50}})
    err = _error(config)
    assert err.path == "method_params.kd_ema.anneal_steps" and err.kind == "ignored"
    # a variant that switches the benchmark's SGD to Adam drops the benchmark's momentum knowingly
    config = _minimal(methods=["naive", "adam"], variants={"adam": {"method": "naive", "train": {"optimizer": "adam"}}})
    config["benchmarks"]["split_digits"]["train"]["momentum"] = 0.9
    check(config, SCHEMA)


def test_methods_needing_clip_are_read_from_the_method_sources():
    from clgrid.config.checks.runs import methods_needing_clip
    from clgrid.methods import METHODS

    assert methods_needing_clip() == {n for n, cls in METHODS.items() if getattr(cls, "needs_clip", False)}
    assert "zscl" in methods_needing_clip()


def test_open_clip_facts_read_from_its_files_are_open_clips_own():
    # The plan reads open_clip's model configs and pretrained tags without importing it (5 s with torch); this is
    # what open_clip itself answers.
    # Asked in a fresh process: other tests register configs of their own (the tiny CLIP) in this one's open_clip.
    import json
    import subprocess
    import sys

    pytest.importorskip("open_clip")
    from clgrid.config.checks.backbones import _open_clip_files

    ask = ("import json, open_clip; print(json.dumps({m: open_clip.list_pretrained_tags_by_model(m) "
           "for m in open_clip.list_models()}))")
    answer = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, check=True)
    own = json.loads(answer.stdout.strip().splitlines()[-1])
    models, tags_of = _open_clip_files()
    assert sorted(models) == sorted(own)
    for model in models:
        assert sorted(tags_of(model)) == sorted(own[model]), model


def test_dataset_shapes_known_before_preparation_are_the_prepared_ones(tmp_path):
    import numpy as np

    from clgrid.config.checks.datasets import dataset_shape
    from clgrid.data.datasets import prepare_digits

    prepare_digits(str(tmp_path / "digits.npz"))
    assert dataset_shape({}, "digits") == list(np.load(tmp_path / "digits.npz")["x_train"].shape[1:])
    assert dataset_shape({"datasets": {"mnist": {"image_size": 224}}}, "mnist") == [1, 224, 224]
    assert dataset_shape({}, "cub200") == [3, 224, 224]
    assert dataset_shape({"datasets": {"mnist": {"npz": "x.npz"}}}, "mnist") is None


@pytest.mark.parametrize("teacher, key, value, reads", [
    ("swap", "swa_every", 100, True), ("anneal_mmengine", "anneal_steps", 50, True),
    ("anneal_mmengine", "ema_ratio", 0.9, True), ("swap", "anneal_steps", 50, False),
    ("swap", "ema_ratio", 0.9, False), ("anneal_mmengine", "swa_every", 100, False)])
def test_the_swap_and_anneal_mmengine_teachers_read_their_parameters(teacher, key, value, reads):
    config = _minimal(methods=["kd"], variants={"kd": {"method": "kd_ema", "params": {"teacher": teacher, key: value}}})
    if reads:
        check(config, SCHEMA)
    else:
        err = _error(config)
        assert err.path == f"variants.kd.params.{key}" and err.kind == "ignored"


def test_validation_fraction_is_checked_against_the_samples_a_class_keeps():
    config = _minimal()
    config["benchmarks"]["split_digits"]["validation"] = {"fraction": 0.1}
    check(copy.deepcopy(config), SCHEMA)  # digits: ~135 training images a class
    config["benchmarks"]["split_digits"]["validation"] = {"fraction": 0.6}
    assert _error(copy.deepcopy(config)).path == "benchmarks.split_digits.validation.fraction"  # at most 0.5
    # One training image a class: round(0.1 * 1) = 0, raised to the minimum of 1, leaves none to train on.
    config = _minimal(datasets={"mnist": {"max_per_class_train": 1}})
    config["benchmarks"] = {"b": {"dataset": "mnist", "scenario": "class_incremental", "n_tasks": 5,
                                  "validation": {"fraction": 0.1}, "train": {"lr": 0.05, "epochs": 1, "batch_size": 8}}}
    err = _error(copy.deepcopy(config))
    assert err.path == "benchmarks.b.validation.fraction" and "max_per_class_train" in str(err), str(err)
    config["datasets"]["mnist"]["max_per_class_train"] = 2  # round(0.1 * 2) = 0 -> 1 set aside, 1 trained on
    check(config, SCHEMA)
