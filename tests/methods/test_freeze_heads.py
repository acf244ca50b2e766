"""Freezing (an option of every method) and the linear / mlp / ncm heads."""

import io

import pytest
import torch

from clgrid.methods import GENERIC_METHODS, METHODS
from clgrid.methods.base import Method
from clgrid.methods.parts.ncm import fold_class_means, nearest_mean_scores
from clgrid.models import build_model
from clgrid.train import fit_task, task_generator
from tests.methods.helpers import task, tiny_model

TRAIN = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "epochs": 2, "batch_size": 8}


def _weights(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("name", sorted(set(GENERIC_METHODS) - {"lora"}))
def test_freeze_all_leaves_every_backbone_weight_bit_identical(name):
    model = tiny_model()
    backbone_before = _weights(model.backbone)
    method = METHODS[name](model, {"freeze": "all"}, 4)
    head = getattr(method, "embedder", model.head)  # metric learning trains its embedding head instead
    head_before = _weights(head)
    for t, classes in enumerate([[0, 1], [2, 3]]):
        data = method.training_data(task(t, classes), lambda i: task(i, [[0, 1], [2, 3]][i]))
        fit_task(model, method, data, TRAIN, task_generator(0, t))
    assert all(torch.equal(p, backbone_before[n]) for n, p in model.backbone.named_parameters())
    assert any(not torch.equal(p, head_before[n]) for n, p in head.named_parameters())


def test_lora_respects_freezing():
    # LoRA merges its adapters into the weights after a task, so frozen blocks must get none.
    with pytest.raises(ValueError, match="leaves no backbone layer to adapt"):
        METHODS["lora"](tiny_model(), {"freeze": "all"}, 4)
    model = build_model({"arch": "mlp", "hidden": [16, 16]}, [1, 2, 3], 4)
    before = _weights(model)
    method = METHODS["lora"](model, {"freeze": "first_k", "freeze_k": 1}, 4)
    fit_task(model, method, task(0, [0, 1]), TRAIN, task_generator(0, 0))
    after = _weights(model)
    assert list(after) == list(before)
    assert torch.equal(after["backbone.block1.0.weight"], before["backbone.block1.0.weight"])
    assert not torch.equal(after["backbone.block2.0.weight"], before["backbone.block2.0.weight"])
    with pytest.raises(ValueError, match="lie in frozen modules"):
        method = METHODS["lora"](model, {"freeze": "first_k", "target_modules": ["backbone.block1.0"]}, 4)
        method.before_task(task(0, [0, 1]), task_generator(0, 0))


def test_freeze_first_k_freezes_only_the_leading_blocks():
    model = build_model({"arch": "mlp", "hidden": [16, 16]}, [1, 2, 3], 4)
    before = _weights(model)
    method = Method(model, {"freeze": "first_k", "freeze_k": 1}, 4)
    assert method.frozen_modules == ["backbone.block1"]
    fit_task(model, method, task(0, [0, 1]), TRAIN, task_generator(0, 0))
    after = _weights(model)
    assert torch.equal(after["backbone.block1.0.weight"], before["backbone.block1.0.weight"])
    assert not torch.equal(after["backbone.block2.0.weight"], before["backbone.block2.0.weight"])


def test_frozen_modules_stay_in_eval_mode_while_training():
    model = tiny_model()
    method = Method(model, {"freeze": "all"}, 4)
    method.train_mode()
    assert model.training and model.head.training and not model.backbone.training


def test_bad_freeze_options_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"backbone.block1"):
        Method(tiny_model(), {"freeze": "first_k", "freeze_k": 5}, 4)
    with pytest.raises(ValueError, match="valid: all, first_k, none"):
        Method(tiny_model(), {"freeze": "some"}, 4)


def test_mlp_head_has_the_hidden_layers():
    model = build_model({"arch": "mlp", "hidden": [16], "head": "mlp", "head_hidden": [8, 6]}, [1, 2, 3], 4)
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 8), (8, 6), (6, 4)]
    assert model(torch.zeros(5, 1, 2, 3)).shape == (5, 4)


def test_nearest_mean_scores_worked_example():
    # Means of classes 0 and 2 at (0,0) and (3,4); class 1 has none -> -inf.
    scores = nearest_mean_scores(torch.tensor([[0.0, 1.0]]), {0: torch.zeros(2), 2: torch.tensor([3.0, 4.0])}, 3)
    assert scores[0, 0] == -1.0 and scores[0, 1] == float("-inf")
    torch.testing.assert_close(scores[0, 2], -torch.tensor(18.0).sqrt())


def test_ncm_head_classifies_separable_classes_perfectly_and_survives_a_state_round_trip():
    torch.manual_seed(0)
    model = build_model({"arch": "mlp", "hidden": [16], "head": "ncm"}, [1, 2, 3], 4)
    method = Method(model, {"freeze": "all"}, 4)
    # Tight clusters far apart (noise 0.01, centres 3 apart): random ReLU features keep them apart.
    data = [task(0, [0, 1], n_per_class=20), task(1, [2, 3], n_per_class=20)]
    for d in data:
        d.x = 3 * d.y.view(-1, 1, 1, 1).float() + 0.01 * d.x
        method.after_task(d)
    x = torch.cat([d.x for d in data])
    y = torch.cat([d.y for d in data])
    assert (method.predict(x).argmax(1) == y).float().mean() == 1.0
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    reloaded = Method(model, {}, 4)
    reloaded.load_state_dict(torch.load(buffer))
    assert torch.equal(reloaded.predict(x), method.predict(x))


def test_lr_scale_scales_the_step():
    # One plain SGD step: the weight change is proportional to the learning rate, so lr_scale 0.5 halves it.
    cfg = {**TRAIN, "momentum": 0.0, "epochs": 1, "batch_size": 1000}
    steps = []
    for scale in (1.0, 0.5):
        model = tiny_model()
        before = model.head.weight.detach().clone()
        fit_task(model, Method(model, {"lr_scale": scale}, 4), task(0, [0, 1]), cfg, task_generator(0, 0))
        steps.append(model.head.weight.detach() - before)
    torch.testing.assert_close(steps[1], steps[0] / 2)


def test_a_class_met_again_keeps_one_pooled_mean():
    # Domain-incremental: class 0 arrives in two tasks; its prototype is the mean over all 30 samples,
    # (10·m₁ + 20·m₂)/30, not the latest task's mean.
    model = tiny_model()
    means, counts = {}, {}
    first, second = task(0, [0], n_per_class=10), task(1, [0], n_per_class=20, seed=5)
    with torch.no_grad():
        fold_class_means(means, counts, model.features(first.x), first.y)
        fold_class_means(means, counts, model.features(second.x), second.y)
        expected = torch.cat([model.features(first.x), model.features(second.x)]).mean(0)
    torch.testing.assert_close(means[0], expected)
    assert counts == {0: 30}
