"""The frozen-feature cache: computed once, reused by every method without calling the backbone, same results."""

import copy

import pytest
import torch
from torch import nn

from clgrid import config as cl
from clgrid import jobs
from clgrid.context import JobContext
from clgrid.spec import RunSpec
from clgrid.io import load_torch, read_json
from clgrid.methods import GENERIC_METHODS
from clgrid.models import feature_cache
from clgrid.models.feature_cache import head_only, state_digest

N_TASKS = 2


@pytest.fixture(scope="module")
def frozen_grid(tmp_path_factory):
    """Digits in 2 tasks, a CNN with BatchNorm, every generic method with freeze: all; data, scenario, init."""
    from clgrid.inprocess import validated
    from tests.conftest import DEFAULT_CONFIG, SCHEMA

    tmp = tmp_path_factory.mktemp("cache")
    config = validated(DEFAULT_CONFIG, SCHEMA)
    config["benchmarks"] = {"split_digits": {**config["benchmarks"]["split_digits"], "n_tasks": N_TASKS}}
    config["benchmarks"]["split_digits"]["train"]["epochs"] = 2
    config["backbones"] = {"cnn": {"arch": "cnn", "channels": [8, 16], "batch_norm": True, "global_pool": False,
                                   "head": "linear"}}
    for name in GENERIC_METHODS:
        config["method_params"][name] = {**config["method_params"][name], "freeze": "all"}
    data, scenario, init = str(tmp / "digits.npz"), str(tmp / "s.json"), str(tmp / "init.pt")
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), data)
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), [data], scenario)
    jobs.init_model(cl.init_spec(config, "split_digits", "cnn", 0), scenario, init)
    features = str(tmp / "features.pt")
    jobs.extract_features(cl.init_spec(config, "split_digits", "cnn", 0), scenario, [data], init, features)
    return {"config": config, "data": data, "scenario": scenario, "init": init, "features": features, "tmp": tmp}


def _count_backbone_calls(monkeypatch) -> list[int]:
    """Every model the jobs build gets a forward hook on its backbone that counts calls (independent of the job's
    own counter)."""
    import clgrid.models as models

    calls = [0]
    build = models.build_model

    def counted(*args, **kwargs):
        model = build(*args, **kwargs)
        model.backbone.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        return model

    monkeypatch.setattr(models, "build_model", counted)
    return calls


def _train_run(grid, method: str, out: str, features: str | None):
    spec = cl.run_spec(grid["config"], "split_digits", "cnn", method, 0)
    prev = grid["init"]
    for t in range(N_TASKS):
        state, ev = f"{grid['tmp']}/{out}/{t}.pt", f"{grid['tmp']}/{out}/{t}.json"
        jobs.train(spec, grid["scenario"], [grid["data"]], prev, t, state, ev, features=features)
        prev = state
    return load_torch(prev), read_json(ev)


def test_the_cache_holds_every_split_and_the_backbone_digest(frozen_grid):
    cache = load_torch(frozen_grid["features"])
    scenario = read_json(frozen_grid["scenario"])
    assert [len(f) for f in cache["train"]] == [len(t["train_idx"]) for t in scenario["tasks"]]
    assert [len(f) for f in cache["test"]] == [len(t["test_idx"]) for t in scenario["tasks"]]
    assert cache["backbone_samples"] == sum(len(f) for f in cache["train"] + cache["test"])
    model = JobContext(RunSpec.of(cl.init_spec(frozen_grid["config"], "split_digits", "cnn", 0)),
                       frozen_grid["scenario"], [frozen_grid["data"]], 1).build_model()
    model.load_state_dict(load_torch(frozen_grid["init"])["model"])
    assert cache["backbone_digest"] == state_digest(model.backbone)
    # The cached features are the frozen backbone's, in eval mode (BatchNorm running statistics).
    x = JobContext(RunSpec.of(cl.init_spec(frozen_grid["config"], "split_digits", "cnn", 0)),
                   frozen_grid["scenario"], [frozen_grid["data"]], 1).task_data(1, "test").x
    with torch.no_grad():
        assert torch.allclose(cache["test"][1], model.eval().features(x), atol=1e-5)


def test_a_second_method_does_not_call_the_backbone(frozen_grid, monkeypatch):
    calls = _count_backbone_calls(monkeypatch)
    _train_run(frozen_grid, "naive", "naive_uncached", None)
    assert calls[0] > 0  # the counter works: without the cache the backbone runs
    calls[0] = 0
    for method in ("naive", "ewc"):
        _train_run(frozen_grid, method, f"{method}_cached", frozen_grid["features"])
        assert calls[0] == 0, f"{method} called the frozen backbone {calls[0]} times with the cache"


@pytest.mark.parametrize("method", [m for m in GENERIC_METHODS if m != "lora"])
def test_cached_and_uncached_training_agree(frozen_grid, method):
    """Same losses, weights and accuracies (to float rounding: features computed in other batch sizes)."""
    state_a, eval_a = _train_run(frozen_grid, method, f"{method}_a", None)
    state_b, eval_b = _train_run(frozen_grid, method, f"{method}_b", frozen_grid["features"])
    assert eval_b["epoch_losses"] == pytest.approx(eval_a["epoch_losses"], rel=1e-4, abs=1e-5)
    assert state_a["model"].keys() == state_b["model"].keys()  # the whole model is saved either way
    for name, weight in state_a["model"].items():
        assert torch.allclose(weight.float(), state_b["model"][name].float(), atol=1e-4), name
    for a, b in zip(eval_a["acc"], eval_b["acc"]):
        assert abs(a - b) <= 1.0


def test_a_cache_of_other_weights_is_refused(frozen_grid, tmp_path):
    stale = load_torch(frozen_grid["features"])
    stale["backbone_digest"] = "0" * 64
    path = str(tmp_path / "stale.pt")
    torch.save(stale, path)
    spec = cl.run_spec(frozen_grid["config"], "split_digits", "cnn", "naive", 0)
    with pytest.raises(ValueError, match="other backbone weights"):
        jobs.train(spec, frozen_grid["scenario"], [frozen_grid["data"]], frozen_grid["init"], 0,
                   str(tmp_path / "s.pt"), str(tmp_path / "e.json"), features=path)


def test_head_only_swaps_preprocess_and_backbone_and_puts_them_back():
    from clgrid.models import build_model

    model = build_model({"arch": "mlp", "hidden": [8]}, [4], 3)
    backbone, preprocess = model.backbone, model.preprocess
    feats = torch.randn(5, 8)
    with head_only(model):
        assert torch.equal(model(feats), model.head(feats))
        assert torch.equal(model.features(feats), feats)
    assert model.backbone is backbone and model.preprocess is preprocess
    with pytest.raises(RuntimeError), head_only(model):
        raise RuntimeError("an error inside the block")
    assert model.backbone is backbone


def test_state_digest_changes_with_any_weight():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    before = state_digest(net)
    assert state_digest(copy.deepcopy(net)) == before
    net[1].running_mean[0] += 1e-6
    assert state_digest(net) != before


def test_backbone_counter_counts_samples():
    net = nn.Linear(3, 2)
    counter = feature_cache.BackboneCounter(net)
    net(torch.zeros(4, 3))
    net(torch.zeros(6, 3))
    counter.remove()
    net(torch.zeros(1, 3))
    assert (counter.calls, counter.samples) == (2, 10)


def test_which_runs_use_the_cache(default_config):
    config = copy.deepcopy(default_config)
    config["variants"] = {"ewc_frozen": {"method": "ewc", "params": {"freeze": "all"}},
                          "lora_frozen": {"method": "lora", "params": {"freeze": "all"}}}
    config["methods"] = ["ewc", "ewc_frozen", "lora_frozen"]
    assert not cl.uses_feature_cache(config, "split_digits", "mlp", "ewc")
    assert cl.uses_feature_cache(config, "split_digits", "mlp", "ewc_frozen")
    assert not cl.uses_feature_cache(config, "split_digits", "mlp", "lora_frozen")  # adapters live in the backbone
    config["benchmarks"]["split_digits"]["transform"] = {"augment": "crop_flip"}
    assert not cl.uses_feature_cache(config, "split_digits", "mlp", "ewc_frozen")  # augmented inputs change
    config["feature_cache"] = False
    assert not cl.uses_feature_cache(config, "permuted_digits", "mlp", "ewc_frozen")
    config["feature_cache"] = True
    config["backbones"]["clip"] = {"arch": "clip", "train_mode": "fc", "pretrained": "openai"}
    assert cl.uses_feature_cache(config, "permuted_digits", "clip", "ewc")  # fc: the image encoder never trains
    # Random init differs per seed; pretrained weights are the same in every seed, so seeds share one cache.
    assert cl.feature_seed(config, "mlp", 2) == 2
    assert cl.feature_seed(config, "clip", 2) == config["seeds"][0]


def test_the_cache_is_computed_in_the_runs_precision(frozen_grid, tmp_path):
    # The cache job's spec is the init spec, which had no train block: it computed in the device's default
    # (autocast nowhere, bf16 on a GPU) whatever the runs' train.precision, so cached and uncached runs of one
    # config trained on features of different arithmetic. It now carries the benchmark's precision.
    config = copy.deepcopy(frozen_grid["config"])
    config["benchmarks"]["split_digits"]["train"]["precision"] = "bf16"
    init_spec = cl.init_spec(config, "split_digits", "cnn", 0)
    assert init_spec["train"] == {"precision": "bf16"}
    features = str(tmp_path / "features_bf16.pt")
    jobs.extract_features(init_spec, frozen_grid["scenario"], [frozen_grid["data"]], frozen_grid["init"], features)
    grid = {**frozen_grid, "config": config, "tmp": tmp_path}
    _, uncached = _train_run(grid, "naive", "uncached", None)
    _, cached = _train_run(grid, "naive", "cached", features)
    assert cached["epoch_losses"] == pytest.approx(uncached["epoch_losses"], rel=1e-4, abs=1e-5)
    assert cached["acc"] == pytest.approx(uncached["acc"], abs=0.5)
    fp32 = load_torch(frozen_grid["features"])["test"][1]
    assert not torch.equal(load_torch(features)["test"][1], fp32)  # bf16 arithmetic really ran


def test_a_benchmark_with_held_out_classes_caches_their_features_too(tmp_path):
    """Held-out classes (holdout_classes) are cached and counted; a tensor of them once broke ``or []``."""
    from clgrid.inprocess import validated
    from tests.conftest import DEFAULT_CONFIG, SCHEMA

    config = validated(DEFAULT_CONFIG, SCHEMA)
    config["benchmarks"] = {"split_digits": {**config["benchmarks"]["split_digits"], "n_tasks": 2,
                                             "holdout_classes": 2}}
    config["backbones"] = {"cnn": {"arch": "cnn", "channels": [4], "batch_norm": True, "global_pool": True,
                                   "head": "linear"}}
    data, scenario, init = str(tmp_path / "digits.npz"), str(tmp_path / "s.json"), str(tmp_path / "i.pt")
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), data)
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), [data], scenario)
    jobs.init_model(cl.init_spec(config, "split_digits", "cnn", 0), scenario, init)
    out = str(tmp_path / "features.pt")
    jobs.extract_features(cl.init_spec(config, "split_digits", "cnn", 0), scenario, [data], init, out)
    cache, held = load_torch(out), read_json(scenario)["holdout"]
    assert len(cache["unseen"]) == len(held["test_idx"]) > 1
    assert len(cache["unseen_train"]) == len(held["train_idx"]) > 1
    assert cache["backbone_samples"] == sum(len(f) for f in cache["train"] + cache["test"]) + \
        len(held["test_idx"]) + len(held["train_idx"])


def test_a_benchmark_with_validation_splits_caches_them_and_evaluates_on_them(tmp_path):
    """The cache holds each task's validation split (and counts it), so a cached run records the validation row as
    an uncached one does; a benchmark without validation keeps a cache without the key (its old bytes)."""
    from clgrid.inprocess import run_cell, validated
    from tests.conftest import DEFAULT_CONFIG, SCHEMA

    config = validated(DEFAULT_CONFIG, SCHEMA)
    config["benchmarks"] = {"split_digits": {**config["benchmarks"]["split_digits"], "n_tasks": 2,
                                             "validation": {"fraction": 0.1}}}
    config["benchmarks"]["split_digits"]["train"]["epochs"] = 1
    config["backbones"] = {"cnn": {"arch": "cnn", "channels": [4], "batch_norm": True, "global_pool": True,
                                   "head": "linear"}}
    config["method_params"]["naive"] = {**config["method_params"]["naive"], "freeze": "all"}
    cached = run_cell(config, "split_digits", "cnn", "naive", 0, tmp_path / "a", features=True)
    plain = run_cell(config, "split_digits", "cnn", "naive", 0, tmp_path / "b", features=False)
    cache = load_torch(next(str(p) for p in (tmp_path / "a").rglob("features*.pt")))
    tasks = read_json(tmp_path / "a" / "scenarios" / "split_digits.json")["tasks"]
    assert [len(f) for f in cache["validation"]] == [len(t["val_idx"]) for t in tasks]
    assert cache["backbone_samples"] == sum(len(f) for f in cache["train"] + cache["test"] + cache["validation"])
    for a, b in zip(sum(cached["validation"]["acc_matrix"], []), sum(plain["validation"]["acc_matrix"], [])):
        assert abs(a - b) <= 1.0  # to float rounding (features computed in other batch sizes)
