"""L2 toward an anchor: zero at the anchor, gradient λ(θ − θ₀); anchor ``init`` stays the first task's start
weights across a save/load between tasks, anchor ``task_start`` follows the tasks."""

import pytest
import torch
import torch.nn.functional as F

from clgrid.methods.l2_init import L2Init
from clgrid.train import task_generator
from tests.methods.helpers import assert_same_weights, fit, tiny_model, train_tasks_with_reload, two_tasks

TASKS = two_tasks()


def _train(model, method, t):
    fit(model, method, TASKS, t)


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
    (model, method), (fresh, restored) = train_tasks_with_reload(
        lambda m: L2Init(m, params, 4), lambda: tiny_model(seed=7), model=model, tasks=TASKS)
    for n, w in init.items():
        assert torch.equal(restored.anchor_weights[n], w)  # still the first task's start, not task 1's
        assert torch.equal(method.anchor_weights[n], w)
    assert_same_weights(model, fresh)


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
