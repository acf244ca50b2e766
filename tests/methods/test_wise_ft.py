"""WiSE-FT: α = 0 gives the start weights and α = 1 the fine-tuned ones bit for bit, α = 0.5 the midpoint;
the moving average is the EMA of the path; frozen weights stay exact; a save/load between tasks changes nothing."""

import pytest
import torch
from torch import nn

from clgrid.methods import Method, TaskData
from clgrid.methods.wise_ft import WiSEFT
from clgrid.optim import SGD
from clgrid.train import task_generator
from tests.methods.helpers import assert_same_weights, fit, tiny_model, train_tasks_with_reload, two_tasks

TASKS = two_tasks()


def _train(model, method, t):
    fit(model, method, TASKS, t)


def _start_and_finetuned(t=0):
    """θ_start and θ_ft of task t: plain fine-tuning (naive) from the same start with the same shuffling."""
    model = tiny_model()
    start = {n: w.clone() for n, w in model.state_dict().items()}
    _train(model, Method(model, {}, 4), t)
    return start, model.state_dict()


def _wise(params, t=0):
    model = tiny_model()
    _train(model, WiSEFT(model, params, 4), t)
    return model.state_dict()


def test_alpha_zero_is_start_and_alpha_one_is_finetuned_exactly():
    start, finetuned = _start_and_finetuned()
    at_zero, at_one = _wise({"alpha": 0.0}), _wise({"alpha": 1.0})
    assert any(not torch.equal(start[n], finetuned[n]) for n in start)  # the task did move the weights
    for n in start:
        assert torch.equal(at_zero[n], start[n]), n
        assert torch.equal(at_one[n], finetuned[n]), n


def test_alpha_half_is_the_midpoint():
    start, finetuned = _start_and_finetuned()
    half = _wise({"alpha": 0.5})
    for n in start:
        assert torch.equal(half[n], (start[n] + finetuned[n]) / 2), n


def test_moving_average_is_the_ema_of_the_training_path():
    # One weight, two SGD steps on ½θ² (lr 0.5): θ = 1 → 0.5 → 0.25.
    # β = 0.6: avg = 1 → 0.6·1 + 0.4·0.5 = 0.8 → 0.6·0.8 + 0.4·0.25 = 0.58, loaded at the task's end.
    model = nn.Module()
    model.theta = nn.Parameter(torch.tensor([1.0]))
    method = WiSEFT(model, {"mode": "moving_average", "ema_decay": 0.6, "alpha": 1.0}, 1)
    data = TaskData(0, torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), [0])
    method.before_task(data, task_generator(0, 0))
    optimizer = SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        (0.5 * model.theta**2).sum().backward()
        method.after_backward()
        optimizer.step()
        method.after_step()
    torch.testing.assert_close(model.theta.detach(), torch.tensor([0.25]))
    method.after_task(data)
    torch.testing.assert_close(model.theta.detach(), torch.tensor([0.58]))


def test_moving_average_extremes():
    start, finetuned = _start_and_finetuned()
    keep_start = _wise({"mode": "moving_average", "ema_decay": 1.0})
    follow = _wise({"mode": "moving_average", "ema_decay": 0.0})
    for n in start:
        assert torch.equal(keep_start[n], start[n]), n
        assert torch.equal(follow[n], finetuned[n]), n


@pytest.mark.parametrize("mode", ["end_of_task", "moving_average"])
def test_frozen_weights_stay_bit_identical(mode):
    model = tiny_model()
    frozen = model.backbone.block1[0].weight.detach().clone()
    _train(model, WiSEFT(model, {"alpha": 0.3, "mode": mode, "ema_decay": 0.9, "freeze": "all"}, 4), 0)
    assert torch.equal(model.backbone.block1[0].weight, frozen)


@pytest.mark.parametrize("mode", ["end_of_task", "moving_average"])
def test_state_round_trip_matches_one_process(mode):
    params = {"alpha": 0.5, "mode": mode, "ema_decay": 0.9}
    (model, method), (fresh, restored) = train_tasks_with_reload(
        lambda m: WiSEFT(m, params, 4), lambda: tiny_model(seed=7), tasks=TASKS)
    assert restored.seen_classes == method.seen_classes == [0, 1, 2, 3]
    assert_same_weights(model, fresh)


@pytest.mark.parametrize("channels_last", [False, True])
def test_moving_average_step_is_the_per_tensor_formula_bit_for_bit(channels_last):
    # θ_avg moves by two torch._foreach_* calls over lists built once per task. The per-tensor loop they replaced
    # is the reference: after every optimizer step of a CNN (BatchNorm statistics averaged too), with and without
    # the channels-last layout, θ_avg is that loop's result bit for bit.
    from clgrid.models import build_model
    from clgrid.train import fit_task
    from tests.methods.helpers import TRAIN, task

    checks = []

    class Checked(WiSEFT):
        def after_step(self):
            averages = {n: t.clone() for n, t in self.average_weights.items()}
            current = {n: t.clone() for n, t in self.model.state_dict().items()}
            super().after_step()
            beta = self.params["ema_decay"]
            for n, avg in averages.items():  # the loop as it was
                avg.mul_(beta).add_(current[n], alpha=1 - beta)
            checks.append(all(torch.equal(averages[n], t) for n, t in self.average_weights.items()))

    torch.manual_seed(0)
    model = build_model({"arch": "cnn", "channels": [4, 8]}, [1, 2, 3], 4)
    method = Checked(model, {"mode": "moving_average", "ema_decay": 0.9}, 4)
    fit_task(model, method, task(0, [0, 1], n_per_class=12), {**TRAIN, "batch_size": 5, "channels_last": channels_last},
             task_generator(0, 0))
    assert checks == [True] * 10


def test_moving_average_walks_the_state_dict_once_per_task_not_every_step(monkeypatch):
    model = tiny_model()
    method = WiSEFT(model, {"mode": "moving_average"}, 4)
    calls = []
    state_dict = model.state_dict
    monkeypatch.setattr(model, "state_dict", lambda *a, **k: calls.append(1) or state_dict(*a, **k))
    _train(model, method, 0)  # 20 samples at batch 8 for 2 epochs: 6 steps
    # before_task's copies of θ_start and θ_avg, the first step's pairing, after_task's ensembling: not one per step.
    assert len(calls) == 4
