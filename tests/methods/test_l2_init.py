"""L2 toward an anchor: zero at the anchor, gradient λ(θ − θ₀); anchor ``init`` stays the first task's start
weights across a save/load between tasks, anchor ``task_start`` follows the tasks."""

import io

import pytest
import torch
import torch.nn.functional as F

from clgrid.methods.l2_init import L2Init
from clgrid.train import fit_task, task_generator
from tests.methods.helpers import task, tiny_model

TRAIN = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "epochs": 2, "batch_size": 8}
TASKS = [task(0, [0, 1]), task(1, [2, 3])]


def _train(model, method, t):
    data = method.training_data(TASKS[t], lambda i: TASKS[i])
    fit_task(model, method, data, TRAIN, task_generator(0, t))


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("anchor", ["init", "task_start"])
def test_penalty_zero_at_anchor_and_gradient_is_lambda_times_offset(anchor):
    model = tiny_model()
    method = L2Init(model, {"l2_lambda": 0.2, "anchor": anchor}, 4)
    method.before_task(TASKS[0], task_generator(0, 0))
    assert method.penalty().item() == 0.0
    start = _weights(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, y = TASKS[0].x, TASKS[0].y
    logits = model(x)
    penalty_part = method.loss(x, y, logits) - F.cross_entropy(logits, y)
    grads = torch.autograd.grad(penalty_part, list(model.parameters()))
    for (n, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(g, 0.2 * (p.detach() - start[n]))


def test_init_anchor_survives_round_trip_and_matches_one_process():
    params = {"l2_lambda": 0.5, "anchor": "init"}
    model = tiny_model()
    init = _weights(model)
    method = L2Init(model, params, 4)
    _train(model, method, 0)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "method": method.state_dict()}, buf)
    _train(model, method, 1)

    buf.seek(0)
    saved = torch.load(buf)
    fresh = tiny_model(seed=7)
    fresh.load_state_dict(saved["model"])
    restored = L2Init(fresh, params, 4)
    restored.load_state_dict(saved["method"])
    _train(fresh, restored, 1)
    for n, w in init.items():
        assert torch.equal(restored.anchor_weights[n], w)  # still the first task's start, not task 1's
        assert torch.equal(method.anchor_weights[n], w)
    for (n, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), n


def test_task_start_anchor_is_previous_task_result_and_needs_no_state():
    model = tiny_model()
    method = L2Init(model, {"anchor": "task_start"}, 4)
    _train(model, method, 0)
    after_first = _weights(model)
    assert method.state_dict()["init_weights"] == {}
    _train(model, method, 1)
    for n, w in after_first.items():
        assert torch.equal(method.anchor_weights[n], w)


def test_unknown_anchor_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: init, task_start"):
        L2Init(tiny_model(), {"anchor": "pretrained"}, 4)
