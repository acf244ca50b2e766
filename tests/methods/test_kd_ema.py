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


# The teacher update runs as torch._foreach_* calls over tensor lists built once per task. The per-tensor loop it
# replaced stays here as the reference: on the CPU the two must agree to the last bit.


def _per_tensor_update(teacher, student, mode, m, n):
    """The teacher update as it was: a Python loop of in-place ops, one tensor at a time."""
    for name, t in teacher.items():
        s = student[name]
        if not t.is_floating_point():
            t.copy_(s)
        elif mode == "swa":
            t.mul_(n).add_(s).div_(n + 1)
        else:
            t.mul_(m).add_(s, alpha=1 - m)


@pytest.mark.parametrize("params", [{"teacher": "ema", "ema_ratio": 0.9},
                                    {"teacher": "anneal", "anneal_start": 0.5, "anneal_steps": 4},
                                    {"teacher": "swa", "swa_every": 2}])
@pytest.mark.parametrize("channels_last", [False, True])
def test_teacher_update_is_the_per_tensor_formula_bit_for_bit(params, channels_last):
    # A CNN (BatchNorm: float statistics and an integer batch count) trained by the loop, with and without the
    # channels-last layout (which swaps parameter data after before_task): after every optimizer step the teacher
    # equals the per-tensor loop applied to copies of the teacher and student before the update, bit for bit.
    from clgrid.models import build_model
    from clgrid.train import fit_task
    from tests.methods.helpers import TRAIN

    checks = []

    class Checked(KDEMA):
        def after_step(self):
            teacher = {n: t.clone() for n, t in self.teacher.model.state_dict().items()}
            student = {n: t.clone() for n, t in self.model.state_dict().items()}
            mode, m, n = self.teacher.mode, self.teacher.momentum(), self.teacher.n_averaged
            averaging = mode != "swa" or (self.teacher.task_step + 1) % self.teacher.swa_every == 0
            super().after_step()
            if averaging:
                _per_tensor_update(teacher, student, mode, m, n)
            checks.append(all(torch.equal(teacher[k], t) for k, t in self.teacher.model.state_dict().items()))

    torch.manual_seed(0)
    model = build_model({"arch": "cnn", "channels": [4, 8]}, [1, 2, 3], 4)
    assert any(not t.is_floating_point() for t in model.state_dict().values())
    data = task(0, [0, 1], n_per_class=12)  # 24 samples at batch 5: 5 steps per epoch, the last of 4
    fit_task(model, Checked(model, params, 4), data, {**TRAIN, "batch_size": 5, "channels_last": channels_last},
             task_generator(0, 0))
    assert checks == [True] * 10


def test_teacher_update_walks_the_state_dicts_once_per_task_not_every_step(monkeypatch):
    model, method = _start({"teacher": "ema"})
    calls = []
    for module in (model, method.teacher.model):
        state_dict = module.state_dict
        monkeypatch.setattr(module, "state_dict", lambda *a, _sd=state_dict, **k: calls.append(1) or _sd(*a, **k))
    g = torch.Generator().manual_seed(6)
    for _ in range(5):
        _nudge(model, g)  # in place, as an optimizer step
        method.after_step()
    assert len(calls) == 2  # student and teacher, at the first step
    method.before_task(task(1, [2, 3]), task_generator(0, 1))
    for _ in range(3):
        method.after_step()
    assert len(calls) == 4  # again once at the new task's first step


def test_swap_teacher_is_the_student_of_the_last_swap_step():
    model, method = _start({"teacher": "swap", "swa_every": 3})
    g = torch.Generator().manual_seed(8)
    at_task_start = _state(model)
    swapped = at_task_start
    for step in range(1, 8):
        _nudge(model, g)
        method.after_step()
        if step % 3 == 0:
            swapped = _state(model)
        teacher = _state(method.teacher.model)
        assert all(torch.equal(teacher[n], swapped[n]) for n in teacher)  # frozen between swaps, no averaging
    assert not all(torch.equal(_state(method.teacher.model)[n], t) for n, t in at_task_start.items())
    # A new task starts from the student as it is (as frozen does), and the count of steps restarts.
    _nudge(model, g)
    method.before_task(task(1, [2, 3]), task_generator(0, 1))
    assert all(torch.equal(_state(method.teacher.model)[n], t) for n, t in _state(model).items())


def test_anneal_mmengine_is_mmengines_momentum_annealing_in_the_teachers_share():
    from clgrid.methods.kd_ema import mmengine_annealed_momentum

    # mmengine: the student's share is max(μ, γ/(γ + k)); here the teacher's, min(ema_ratio, k/(γ + k)), μ = 1 − ema_ratio.
    for k in (0, 1, 5, 50, 100, 1000):
        mmengine_share = max(0.1, 100 / (100 + k))
        assert mmengine_annealed_momentum(k, 100, 0.9) == pytest.approx(1 - mmengine_share, abs=1e-15)
    assert mmengine_annealed_momentum(0, 100, 0.9) == 0.0  # the first update copies the student
    assert mmengine_annealed_momentum(100, 100, 0.9) == 0.5 and mmengine_annealed_momentum(900, 100, 0.9) == 0.9
    model, method = _start({"teacher": "anneal_mmengine", "ema_ratio": 0.9, "anneal_steps": 2})
    g = torch.Generator().manual_seed(9)
    seen = []
    for _ in range(4):
        teacher_before = _state(method.teacher.model)
        _nudge(model, g)
        student = _state(model)
        m = method.teacher.momentum()
        seen.append(m)
        method.after_step()
        for n, t in method.teacher.model.state_dict().items():
            if t.is_floating_point():
                torch.testing.assert_close(t, m * teacher_before[n] + (1 - m) * student[n])
    assert seen == [0.0, pytest.approx(1 / 3), 0.5, pytest.approx(0.6)]  # k/(2 + k), below the cap 0.9


@pytest.mark.parametrize("teacher", ["swap", "anneal_mmengine"])
def test_new_teachers_survive_a_state_round_trip(teacher):
    params = {"teacher": teacher, "ema_ratio": 0.9, "anneal_steps": 4, "swa_every": 2}
    (straight_model, straight), (resumed_model, resumed) = train_tasks_with_reload(
        lambda m: KDEMA(m, params, 4), lambda: tiny_model(seed=9))
    assert_same_weights(straight_model, resumed_model)
    assert_same_weights(straight.teacher.model, resumed.teacher.model)
