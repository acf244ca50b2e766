"""kd_ema: the teacher follows the EMA / annealed / SWA formulas exactly, and the loss is CE + λ·T²·KL."""

import math

import pytest
import torch
import torch.nn.functional as F

from clgrid.methods.kd_ema import KDEMA, cosine_momentum
from clgrid.train import task_generator
from tests.methods.helpers import assert_same_weights, task, tiny_model, train_tasks_with_reload


def _state(module):
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


def _nudge(model, generator):
    """Stand in for an optimizer step: move every student weight by a random amount."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator))


def _start(params, seed=0):
    model = tiny_model(seed)
    method = KDEMA(model, params, 4)
    method.before_task(task(0, [0, 1]), task_generator(0, 0))
    return model, method


@pytest.mark.parametrize("mode, expected_m", [("ema", 0.9), ("anneal", 0.5)])
def test_teacher_after_one_step_is_the_ema_formula(mode, expected_m):
    model, method = _start({"teacher": mode, "ema_ratio": 0.9, "anneal_start": 0.5, "anneal_steps": 10})
    teacher_before = _state(method.teacher.model)
    assert all(torch.equal(teacher_before[n], s) for n, s in _state(model).items())  # starts as the student
    _nudge(model, torch.Generator().manual_seed(1))
    student = _state(model)
    method.after_step()
    for n, t in method.teacher.model.state_dict().items():
        torch.testing.assert_close(t, expected_m * teacher_before[n] + (1 - expected_m) * student[n])


def test_anneal_momentum_runs_from_start_to_ema_ratio_on_byols_cosine():
    assert cosine_momentum(0, 40, 0.9, 0.999) == 0.9
    assert cosine_momentum(40, 40, 0.9, 0.999) == 0.999
    assert cosine_momentum(100, 40, 0.9, 0.999) == 0.999  # held after K steps
    values = [cosine_momentum(k, 40, 0.9, 0.999) for k in range(41)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    # With end value 1 it is BYOL's schedule, 1 − (1 − τ_base)(cos(πk/K) + 1)/2 (Grill et al. 2020, §3.2).
    for k in (0, 7, 20, 33):
        byol = 1 - (1 - 0.996) * (math.cos(math.pi * k / 40) + 1) / 2
        assert cosine_momentum(k, 40, 0.996, 1.0) == pytest.approx(byol, abs=1e-15)
    # The teacher walks the schedule one optimizer step at a time and restarts it at each task.
    model, method = _start({"teacher": "anneal", "ema_ratio": 0.999, "anneal_start": 0.9, "anneal_steps": 5})
    seen = []
    for _ in range(7):
        seen.append(method.teacher.momentum())
        method.after_step()
    assert seen[0] == 0.9 and seen[5] == seen[6] == 0.999
    method.before_task(task(1, [2, 3]), task_generator(0, 1))
    assert method.teacher.momentum() == 0.9


@pytest.mark.parametrize("every", [1, 2])
def test_swa_teacher_is_the_plain_mean_of_the_snapshots(every):
    model, method = _start({"teacher": "swa", "swa_every": every})
    g = torch.Generator().manual_seed(3)
    snapshots = []
    for step in range(1, 7):
        _nudge(model, g)
        method.after_step()
        if step % every == 0:
            snapshots.append(_state(model))
    assert method.teacher.n_averaged == len(snapshots)
    for n, t in method.teacher.model.state_dict().items():
        torch.testing.assert_close(t, torch.stack([s[n] for s in snapshots]).mean(0))


def test_loss_is_ce_plus_weighted_kl_to_the_teacher():
    x, y = task(0, [0, 1]).x, task(0, [0, 1]).y
    model, method = _start({"kd_weight": 0.7, "temperature": 3.0})
    logits = model(x)
    # The teacher starts as the student: the KL term is exactly zero.
    assert torch.equal(method.loss(x, y, logits), F.cross_entropy(logits, y))
    _nudge(model, torch.Generator().manual_seed(4))
    logits = model(x)
    # Brute force: T² · mean over samples of Σ_c p_T,c (log p_T,c − log p_S,c).
    with torch.no_grad():
        p_teacher = F.softmax(method.teacher.model(x) / 3.0, dim=1)
    kl = (p_teacher * (p_teacher.log() - F.log_softmax(logits / 3.0, dim=1))).sum(1).mean()
    torch.testing.assert_close(method.loss(x, y, logits), F.cross_entropy(logits, y) + 0.7 * 9.0 * kl)
    off = KDEMA(model, {"kd_weight": 0.0}, 4)
    off.teacher.model.head.bias.data += 5.0
    assert torch.equal(off.loss(x, y, logits), F.cross_entropy(logits, y))


def test_cls_only_distils_the_head_on_the_students_features():
    data = task(0, [0, 1])
    model, method = _start({"cls_only": True, "kd_weight": 1.0})
    g = torch.Generator().manual_seed(5)
    _nudge(method.teacher.model, g)  # teacher differs from the student everywhere
    logits = model(data.x)
    student_logits, teacher_logits = method.distillation_pair(data.x, logits)
    features = model.features(data.x)
    torch.testing.assert_close(teacher_logits, method.teacher.model.head(features))
    torch.testing.assert_close(student_logits, logits)
    # The teacher's backbone plays no part ...
    before = method.loss(data.x, data.y, logits)
    with torch.no_grad():
        for p in method.teacher.model.backbone.parameters():
            p.mul_(-3.0)
    assert torch.equal(method.loss(data.x, data.y, model(data.x)), before)
    # ... and the distillation term's gradient reaches the student's head only.
    distill = method.loss(data.x, data.y, model(data.x)) - F.cross_entropy(model(data.x), data.y)
    model.zero_grad()
    distill.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())


@pytest.mark.parametrize("teacher", ["ema", "anneal", "swa", "frozen"])
def test_state_round_trip_gives_the_same_run(teacher):
    params = {"teacher": teacher, "ema_ratio": 0.9, "anneal_start": 0.5, "anneal_steps": 4}
    # Tasks 0 and 1 in one object, and with model and method rebuilt from saved state in between, as jobs do.
    (straight_model, straight), (resumed_model, resumed) = train_tasks_with_reload(
        lambda m: KDEMA(m, params, 4), lambda: tiny_model(seed=9))
    assert_same_weights(straight_model, resumed_model)
    assert_same_weights(straight.teacher.model, resumed.teacher.model)
    assert resumed.teacher.n_averaged == straight.teacher.n_averaged
    assert resumed.seen_classes == [0, 1, 2, 3]
    # The model's checkpoint keys stay those of a plain model; the teacher lives in the method state.
    assert set(resumed_model.state_dict()) == set(tiny_model().state_dict())
    if teacher != "frozen":
        assert not all(torch.equal(straight.teacher.model.state_dict()[n], t)
                       for n, t in straight_model.state_dict().items())
