"""SI: ω is the path integral −Σ g·Δθ of the task loss, Ω is exactly zero for weights that never moved,
the penalty is zero at the anchor, and the state survives a save/load between tasks."""

import torch
import torch.nn.functional as F
from torch import nn

from clgrid.methods import TaskData
from clgrid.methods.si import SynapticIntelligence
from clgrid.optim import SGD
from clgrid.train import task_generator
from tests.methods.helpers import assert_same_weights, fit, tiny_model, train_tasks_with_reload, two_tasks

TASKS = two_tasks()


def _train(model, method, t, tasks=TASKS):
    fit(model, method, tasks, t)


class OneWeight(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([value]))


def test_path_integral_matches_hand_computation_on_a_quadratic():
    # L(θ) = ½·a·θ², a = 2, θ0 = 1, two SGD steps with lr 0.1:
    #   g0 = 2,   θ1 = 0.8,  −g0·Δ0 = −2·(−0.2)    = 0.4
    #   g1 = 1.6, θ2 = 0.64, −g1·Δ1 = −1.6·(−0.16) = 0.256     → ω = 0.656
    #   Ω = ω / ((θ2 − θ0)² + ξ) = 0.656 / (0.1296 + 0.001)
    model = OneWeight(1.0)
    method = SynapticIntelligence(model, {"c": 1.0, "xi": 1e-3}, 1)
    data = TaskData(0, torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), [0])
    method.before_task(data, task_generator(0, 0))
    optimizer = SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        (0.5 * 2.0 * model.theta**2).sum().backward()
        method.after_backward()
        optimizer.step()
        method.after_step()
    torch.testing.assert_close(method.path_integral["theta"], torch.tensor([0.656]))
    method.after_task(data)
    torch.testing.assert_close(method.importance["theta"], torch.tensor([0.656 / (0.36**2 + 1e-3)]))
    torch.testing.assert_close(method.anchor["theta"], torch.tensor([0.64]))


def test_importance_exactly_zero_for_weights_that_never_move():
    model = tiny_model()
    with torch.no_grad():
        model.head.weight[:, 0] = 0.5
        model.backbone.block1[0].bias[0] = -1e3  # hidden unit 0 is dead: its outgoing weights get zero gradient
    method = SynapticIntelligence(model, {"freeze": "first_k", "freeze_k": 1}, 4)  # block1 frozen
    _train(model, method, 0)
    assert torch.equal(model.head.weight[:, 0], torch.full((4,), 0.5))  # never moved
    assert torch.equal(method.importance["head.weight"][:, 0], torch.zeros(4))
    for name in ("backbone.block1.0.weight", "backbone.block1.0.bias"):
        assert torch.equal(method.importance[name], torch.zeros_like(method.importance[name]))
    assert (method.importance["head.weight"][:, 1:] > 0).any()  # the ones that learned do count


def test_penalty_zero_at_anchor_and_loss_adds_c_times_it():
    model = tiny_model()
    method = SynapticIntelligence(model, {"c": 0.3}, 4)
    _train(model, method, 0)
    assert method.penalty().item() == 0.0
    with torch.no_grad():
        model.head.bias.add_(0.1)
    expected = (method.importance["head.bias"] * 0.1**2).sum()  # Σ Ω (θ − θ̃)², only the bias moved
    torch.testing.assert_close(method.penalty(), expected)
    x, y = TASKS[1].x, TASKS[1].y
    logits = model(x)
    torch.testing.assert_close(method.loss(x, y, logits), F.cross_entropy(logits, y) + 0.3 * expected)


def test_path_integral_uses_the_task_loss_gradient_not_the_penalty():
    # float64: after_backward recovers the task gradient as total − 2cΩ(θ − θ̃), exact up to rounding.
    tasks = [TaskData(t.task_id, t.x.double(), t.y, t.classes) for t in TASKS]
    model = tiny_model().double()
    method = SynapticIntelligence(model, {"c": 10.0}, 4)
    _train(model, method, 0, tasks)
    second = tasks[1]
    with torch.no_grad():
        model.head.weight.add_(0.3)  # away from the anchor, so the penalty's gradient is large
    method.before_task(second, task_generator(0, 1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    task_grads = torch.autograd.grad(F.cross_entropy(model(second.x), second.y), list(model.parameters()))
    optimizer = SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    method.loss(second.x, second.y, model(second.x)).backward()
    method.after_backward()
    total_grad = model.head.weight.grad.clone()
    optimizer.step()
    method.after_step()
    for (n, p), g in zip(model.named_parameters(), task_grads):
        torch.testing.assert_close(method.path_integral[n], -g * (p.detach() - before[n]))
    moved = model.head.weight.detach() - before["head.weight"]
    assert not torch.allclose(method.path_integral["head.weight"], -total_grad * moved, rtol=1e-2, atol=1e-6)


def test_state_round_trip_matches_one_process():
    params = {"c": 0.5, "xi": 1e-3}
    (model, method), (fresh, restored) = train_tasks_with_reload(
        lambda m: SynapticIntelligence(m, params, 4), lambda: tiny_model(seed=7), tasks=TASKS)
    assert_same_weights(model, fresh)
    for n in method.importance:
        assert torch.equal(method.importance[n], restored.importance[n])
        assert torch.equal(method.anchor[n], restored.anchor[n])
