"""Runs that start from other runs (a backbone's ``init_from``, and ``only`` limiting the grid).

The second stage starts from exactly the first stage's weights (every tensor's bytes), its head as asked; the DAG
trains the first stage first, and changing the first stage replans the second (and not the other way round); the
in-process runner follows the same plan; bad ``init_from``/``only`` entries are refused at plan time, naming the
field.
"""

import copy

import pytest
import torch
import yaml

from clgrid.config import ConfigError, check
from clgrid.jobs.init import start_from_run
from tests.conftest import REPO, SCHEMA, copy_workflow
from tests.test_workflow import planned_jobs, snakemake

EXAMPLE = REPO / "config" / "experiments" / "two_stage_digits.yaml"
SOURCE = "results/runs/digits_pretrain/mlp/naive/s0/task0/state.pt"
SECOND_INIT = "results/init/permuted_digits/mlp_pretrained/s0/model.pt"
SCRATCH_INIT = "results/init/permuted_digits/mlp/s0/model.pt"
SECOND_RUN = "results/runs/permuted_digits/mlp_pretrained/naive/s0/metrics.json"


def small(config: dict) -> dict:
    """The shipped example at one seed and fewer epochs (the same structure, seconds instead of a minute)."""
    config = copy.deepcopy(config)
    config["seeds"] = [0]
    config["device"] = "cpu"
    for bench in config["benchmarks"].values():
        bench["train"]["epochs"] = 1
    return config


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    root = copy_workflow(tmp_path_factory.mktemp("two_stage"))
    (root / "stages.yaml").write_text(yaml.safe_dump(small(yaml.safe_load(EXAMPLE.read_text()))))
    planned = planned_jobs(root, SECOND_RUN, SCRATCH_INIT, "--configfile", "stages.yaml")
    snakemake(root, SECOND_RUN, SCRATCH_INIT, "--cores", "2", "--configfile", "stages.yaml")
    return root, planned


def load(path):
    from clgrid.io import load_torch

    return load_torch(path)


def test_the_dag_trains_the_first_stage_first(two_stage):
    _, planned = two_stage
    assert planned["init_model_from_run"] == 1
    assert planned["train_task"] == 1  # stage 1: digits_pretrain has one task
    assert planned["init_model"] == 2  # stage 1's own initial model and the from-scratch one of stage 2


def test_second_stage_starts_from_exactly_the_first_stages_weights(two_stage):
    root, _ = two_stage
    source, init, scratch = load(root / SOURCE), load(root / SECOND_INIT), load(root / SCRATCH_INIT)
    assert source["task"] == 0 and init["task"] == -1
    body = [k for k in source["model"] if not k.startswith("head.")]
    assert body, "the MLP has backbone weights"
    for key in body:  # every backbone tensor, byte for byte
        a, b = source["model"][key], init["model"][key]
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.numpy().tobytes() == b.numpy().tobytes(), key
    for key in ("head.weight", "head.bias"):  # head: replace -> the head a fresh model of this seed gets
        assert not torch.equal(init["model"][key], source["model"][key])
        assert torch.equal(init["model"][key], scratch["model"][key])
    # the init spec names its source and the source run's config hash, which the source state recorded
    assert init["clgrid"]["config_hash"] != source["clgrid"]["config_hash"]
    spec_hash = source["clgrid"]["config_hash"]
    log = (root / "results/init/permuted_digits/mlp_pretrained/s0/init.log").read_text()
    assert "digits_pretrain/mlp/naive/s0 task 0" in log and "head replace" in log
    from clgrid.config import init_source
    from clgrid.inprocess import validated

    config = validated(root / "stages.yaml", SCHEMA)
    assert init_source(config, "permuted_digits", "mlp_pretrained", 0)["config_hash"] == spec_hash


def test_changing_the_first_stage_replans_the_second(two_stage):
    root, _ = two_stage
    assert planned_jobs(root, SECOND_RUN, "--configfile", "stages.yaml") == {}
    config = yaml.safe_load((root / "stages.yaml").read_text())
    config["benchmarks"]["digits_pretrain"]["train"]["lr"] = 0.04
    (root / "first_changed.yaml").write_text(yaml.safe_dump(config))
    planned = planned_jobs(root, SECOND_RUN, "--configfile", "first_changed.yaml")
    assert planned["train_task"] == 1 and planned["init_model_from_run"] == 1
    assert sum(n for rule, n in planned.items() if rule.startswith("train_permuted_digits")) == 1
    # the other way round: changing the second stage leaves the first alone
    config = yaml.safe_load((root / "stages.yaml").read_text())
    config["benchmarks"]["permuted_digits"]["train"]["lr"] = 0.04
    (root / "second_changed.yaml").write_text(yaml.safe_dump(config))
    planned = planned_jobs(root, SECOND_RUN, "--configfile", "second_changed.yaml")
    assert "train_task" not in planned and "init_model_from_run" not in planned
    assert sum(n for rule, n in planned.items() if rule.startswith("train_permuted_digits")) == 1


def test_in_process_runner_runs_the_source_run_first(tmp_path):
    from clgrid.inprocess import run_cell

    config = small(yaml.safe_load(EXAMPLE.read_text()))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    from clgrid.inprocess import validated

    config = validated(tmp_path / "c.yaml", SCHEMA)
    metrics = run_cell(config, "permuted_digits", "mlp_pretrained", "naive", 0, tmp_path / "results")
    assert (tmp_path / "results/runs/digits_pretrain/mlp/naive/s0/task0/state.pt").exists()
    assert len(metrics["acc_matrix"]) == 3


# start_from_run on its own: each head mode, and the refusals


def net(n_classes, seed):
    from clgrid.models import build_model

    torch.manual_seed(seed)
    return build_model({"arch": "mlp", "hidden": [8]}, [1, 4, 4], n_classes)


def saved(tmp_path, model, task=2, config_hash="abc"):
    from clgrid.io import save_torch

    path = tmp_path / "state.pt"
    save_torch(path, {"clgrid": {"config_hash": config_hash}, "task": task, "model": model.state_dict()})
    return str(path)


SOURCE_OF = {"benchmark": "b", "backbone": "m", "method": "naive", "seed": 0, "task": 2, "config_hash": "abc"}


def test_head_keep_reinit_replace(tmp_path):
    trained = net(10, seed=1)
    path = saved(tmp_path, trained)
    kept = net(10, seed=2)
    start_from_run(kept, {**SOURCE_OF, "head": "keep"}, path)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in kept.state_dict().items())
    fresh = net(10, seed=2)
    reinit = net(10, seed=2)
    start_from_run(reinit, {**SOURCE_OF, "head": "reinit"}, path)
    for k, v in reinit.state_dict().items():
        assert torch.equal(v, (fresh if k.startswith("head.") else trained).state_dict()[k]), k
    replaced = net(5, seed=2)
    start_from_run(replaced, {**SOURCE_OF, "head": "replace"}, path)
    assert replaced.head.weight.shape == (5, 8)
    assert torch.equal(replaced.backbone.block1[0].weight, trained.backbone.block1[0].weight)


def test_refuses_a_stale_or_unfitting_state(tmp_path):
    path = saved(tmp_path, net(10, seed=1))
    with pytest.raises(ValueError, match="config hash"):
        start_from_run(net(10, 0), {**SOURCE_OF, "head": "keep", "config_hash": "other"}, path)
    with pytest.raises(ValueError, match="expects task 1"):
        start_from_run(net(10, 0), {**SOURCE_OF, "head": "keep", "task": 1}, path)
    with pytest.raises(ValueError, match="head: replace"):
        start_from_run(net(5, 0), {**SOURCE_OF, "head": "keep"}, path)
    with pytest.raises(ValueError, match="head: replace"):
        start_from_run(net(5, 0), {**SOURCE_OF, "head": "reinit"}, path)


# plan-time checks


def checked(edit):
    config = yaml.safe_load(EXAMPLE.read_text())
    edit(config)
    return check(config, SCHEMA)


@pytest.mark.parametrize("edit, field, words", [
    (lambda c: c["backbones"]["mlp_pretrained"]["init_from"].update(method="replay"),
     "backbones.mlp_pretrained.init_from.method", "not a run in methods"),
    (lambda c: c["backbones"]["mlp_pretrained"]["init_from"].update(method="ewc"),
     "backbones.mlp_pretrained.init_from.method", "only: leaves it out"),
    (lambda c: c["backbones"]["mlp_pretrained"]["init_from"].update(benchmark="permuted_digits",
                                                                     backbone="mlp_pretrained"),
     "backbones.mlp_pretrained.init_from.backbone", "its own run"),
    (lambda c: c["backbones"]["mlp_pretrained"]["init_from"].update(task=1),
     "backbones.mlp_pretrained.init_from.task", "has 1 tasks"),
    (lambda c: c["backbones"]["mlp_pretrained"]["init_from"].update(seed=7),
     "backbones.mlp_pretrained.init_from.seed", "not one of the seeds"),
    (lambda c: c["backbones"]["mlp"].update(init_from={"benchmark": "permuted_digits", "backbone": "mlp_pretrained",
                                                       "method": "naive"}),
     "backbones", "circle"),
    (lambda c: c["only"].update(split={"methods": ["naive"]}), "only.split", "not a benchmark"),
    (lambda c: c["only"]["digits_pretrain"].update(backbones=["mlpp"]), "only.digits_pretrain.backbones[0]",
     "did you mean"),
    (lambda c: c["backbones"]["mlp_pretrained"].update(arch="cnn", hidden=None) or
     c["backbones"]["mlp_pretrained"].pop("hidden"),
     "backbones.mlp_pretrained.init_from.backbone", "cannot fit"),
])
def test_bad_stages_are_refused_at_plan_time(edit, field, words):
    with pytest.raises(ConfigError) as err:
        checked(edit)
    text = str(err.value)
    assert field in text and words in text, text


def test_keep_across_benchmarks_needs_the_same_class_count():
    def edit(c):
        c["benchmarks"]["digits_pretrain"]["dataset"] = "fashion_mnist"
        c["backbones"]["mlp_pretrained"]["init_from"]["head"] = "keep"
    checked(edit)  # both have 10 classes: fine

    def edit100(c):
        c["benchmarks"]["digits_pretrain"]["dataset"] = "cifar100"
        c["backbones"]["mlp_pretrained"]["init_from"]["head"] = "keep"
    with pytest.raises(ConfigError, match="100 classes"):
        checked(edit100)


def test_only_as_a_list_runs_the_union_of_its_parts():
    from clgrid.config import runs

    def edit(c):
        c["only"]["permuted_digits"] = [{"backbones": ["mlp"], "methods": ["naive"]},
                                        {"backbones": ["mlp_pretrained"], "methods": ["ewc"]}]
    config = checked(edit)
    cells = sorted({(r.benchmark, r.backbone, r.method) for r in runs(config)})
    assert cells == [("digits_pretrain", "mlp", "naive"), ("permuted_digits", "mlp", "naive"),
                     ("permuted_digits", "mlp_pretrained", "ewc")]

    def bad(c):
        c["only"]["permuted_digits"] = [{"backbones": ["mlp"]}, {"methods": ["ewk"]}]
    with pytest.raises(ConfigError, match=r"only.permuted_digits\[1\].methods\[0\]"):
        checked(bad)
