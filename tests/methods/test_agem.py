"""A-GEM: a gradient that conflicts with the memory gradient is projected to be orthogonal to it
(closed form of Chaudhry et al. 2019); one that does not is left alone."""

import torch
import torch.nn.functional as F

from clgrid.methods.agem import AGEM, project_gradient
from clgrid.train import task_generator
from tests.methods.helpers import assert_same_weights, task, tiny_model, train_tasks_with_reload


def test_projection_closed_form_and_sign():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        grad, ref = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
        if torch.dot(grad, ref) > 0:
            grad = -grad
        out = project_gradient(grad, ref)
        # Closed form, written out per coordinate: g_i − (Σ g_j r_j / Σ r_j²) r_i.
        coef = sum(a * b for a, b in zip(grad.tolist(), ref.tolist())) / sum(b * b for b in ref.tolist())
        torch.testing.assert_close(out, torch.tensor([a - coef * b for a, b in zip(grad.tolist(), ref.tolist())],
                                                     dtype=torch.float64))
        assert torch.dot(out, ref) >= -1e-12 * grad.norm() * ref.norm()
        assert torch.equal(project_gradient(-grad, ref), -grad)  # positive dot: unchanged
    # Orthogonal already (dot = 0): unchanged.
    assert torch.equal(project_gradient(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])), torch.tensor([1.0, 0.0]))


def _method_with_memory(mem_batch_size=1000):
    model = tiny_model(seed=2)
    method = AGEM(model, {"samples_per_class": 4, "mem_batch_size": mem_batch_size}, 4)
    first = task(0, [0, 1])
    method.before_task(first, task_generator(0, 0))
    method.after_task(first)
    method.before_task(task(1, [2, 3]), task_generator(0, 1))
    return model, method


def _reference_gradient(model, method):
    # Independently: the gradient of the mean CE over the whole memory (mem_batch_size covers it).
    params = list(model.parameters())
    loss = F.cross_entropy(model(method.memory_x), method.memory_y)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def _set_grad(model, flat):
    offset = 0
    for p in model.parameters():
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def _get_grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_after_backward_projects_conflicting_gradient_onto_memory_constraint():
    model, method = _method_with_memory()
    g_ref = _reference_gradient(model, method)
    noise = torch.randn(g_ref.shape, generator=torch.Generator().manual_seed(1))
    for conflicting in (-g_ref + 0.1 * g_ref.norm() * noise / noise.norm(), -3.0 * g_ref):
        assert torch.dot(conflicting, g_ref) < 0
        _set_grad(model, conflicting)
        method.after_backward()
        out = _get_grad(model)
        assert torch.dot(out, g_ref) >= -1e-6 * conflicting.norm() * g_ref.norm()
        expected = conflicting - torch.dot(conflicting, g_ref) / torch.dot(g_ref, g_ref) * g_ref
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-6)


def test_after_backward_leaves_agreeing_gradient_unchanged():
    model, method = _method_with_memory()
    g_ref = _reference_gradient(model, method)
    agreeing = g_ref + 0.5 * torch.randn(g_ref.shape, generator=torch.Generator().manual_seed(2)) * g_ref.norm() / 10
    assert torch.dot(agreeing, g_ref) > 0
    _set_grad(model, agreeing)
    method.after_backward()
    assert torch.equal(_get_grad(model), agreeing)


def test_real_backward_is_projected_exactly_when_it_conflicts():
    model, method = _method_with_memory()
    new = task(1, [2, 3])
    g_ref = _reference_gradient(model, method)
    model.zero_grad()
    F.cross_entropy(model(new.x), new.y).backward()
    raw = _get_grad(model)
    method.after_backward()  # computes g_ref itself without touching .grad first
    out = _get_grad(model)
    dot = torch.dot(raw, g_ref)
    if dot < 0:
        torch.testing.assert_close(out, raw - dot / torch.dot(g_ref, g_ref) * g_ref, rtol=1e-4, atol=1e-6)
    else:
        assert torch.equal(out, raw)


def test_memory_keeps_samples_per_class_for_each_task():
    model = tiny_model()
    method = AGEM(model, {"samples_per_class": 3}, 4)
    for t, classes in enumerate([[0, 1], [2, 3]]):
        data = task(t, classes)
        method.before_task(data, task_generator(0, t))
        method.after_task(data)
    assert sorted(method.memory_y.tolist()) == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert method.memory_task.tolist() == [0] * 6 + [1] * 6
    for x, y in zip(method.memory_x, method.memory_y):  # stored inputs are training samples of their class
        source = task(int(y) // 2, [2 * (int(y) // 2), 2 * (int(y) // 2) + 1])
        assert int(source.y[(source.x.flatten(1) == x.flatten()).all(1)][0]) == int(y)


def test_state_round_trip_equals_training_in_one_object():
    params = {"samples_per_class": 5, "mem_batch_size": 6}

    def on_reload(restored_model, restored, state):
        assert torch.equal(restored.memory_x, state["method"]["memory_x"]) and len(restored.memory_y) == 10

    (model, method), (restored_model, restored) = train_tasks_with_reload(
        lambda m: AGEM(m, params, 4), lambda: tiny_model(seed=7), on_reload=on_reload)
    assert_same_weights(restored_model, model)
    assert torch.equal(restored.memory_y, method.memory_y) and torch.equal(restored.memory_task, method.memory_task)


def test_parameter_the_loss_does_not_reach_gets_a_gradient_only_when_projected():
    # As before the flat write-back: an unused parameter keeps grad None unless the gradient is replaced, and then
    # gets its (zero) share of the projection; the others are written back in place.
    for sign, projects in [(-1.0, True), (1.0, False)]:
        model = tiny_model(seed=2)
        model.unused = torch.nn.Parameter(torch.ones(3))
        method = AGEM(model, {"samples_per_class": 4, "mem_batch_size": 1000}, 4)
        first = task(0, [0, 1])
        method.before_task(first, task_generator(0, 0))
        method.after_task(first)
        method.before_task(task(1, [2, 3]), task_generator(0, 1))
        used = [p for p in model.parameters() if p is not model.unused]
        g_ref = torch.autograd.grad(F.cross_entropy(model(method.memory_x), method.memory_y), used)
        for p, g in zip(used, g_ref):
            p.grad = sign * g.clone()
        method.after_backward()
        assert (model.unused.grad is not None) == projects
        if projects:
            assert torch.equal(model.unused.grad, torch.zeros(3))
            assert all(p.grad.abs().max() < 1e-5 * g.abs().max() for p, g in zip(used, g_ref))  # -g_ref projects to 0


def test_memory_batch_is_drawn_as_before_and_its_index_moved_without_waiting(monkeypatch):
    # The memory batch is still drawn on the host from the task's generator (the same draws on every device); its
    # index goes to the device with non_blocking (no stream sync) and not at all for inputs kept on the host.
    model, method = _method_with_memory(mem_batch_size=5)
    state = method.generator.get_state()
    moves = []
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: moves.append((t.dtype, k.get("non_blocking"))) or
                        to(t, *a, **k))
    grad = method.reference_gradient()
    monkeypatch.undo()
    # The code before: randperm from the task generator, the first mem_batch_size, the mean CE's gradient.
    reference = torch.Generator().set_state(state)
    pick = torch.randperm(len(method.memory_y), generator=reference)[:5]
    loss = F.cross_entropy(model(method.memory_x[pick]), method.memory_y[pick])
    assert torch.equal(grad, torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))]))
    assert torch.equal(method.generator.get_state(), reference.get_state())  # the same draws, no more
    assert moves[0] == (torch.int64, True)  # to the memory's device (then take's .to: the index's own device)
