"""OGD: projected gradients are orthogonal to every stored direction, the basis is orthonormal and spans the
ground-truth-logit gradients of the sampled points, projection is idempotent and a no-op without a basis."""

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from clgrid.methods.ogd import OGD, extend_orthonormal_basis, project_out
from clgrid.train import task_generator
from tests.methods.helpers import assert_same_weights, task, tiny_model, train_tasks_with_reload


def _after_one_task(ogd_samples=None, n_per_class=10):
    model = tiny_model()
    method = OGD(model, {"ogd_samples": ogd_samples}, 4)
    first = task(0, [0, 1], n_per_class=n_per_class)
    method.before_task(first, task_generator(0, 0))
    method.after_task(first)
    return model, method, first


def _flat_grad(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _backward_on_new_task(model):
    second = task(1, [2, 3])
    model.zero_grad()
    F.cross_entropy(model(second.x), second.y).backward()


def test_projected_gradient_is_orthogonal_to_every_stored_direction():
    model, method, _ = _after_one_task()
    _backward_on_new_task(model)
    raw = _flat_grad(model).clone()
    method.after_backward()
    projected = _flat_grad(model)
    cosines = (method.ogd_basis @ projected) / projected.norm()
    assert cosines.abs().max() < 1e-5
    assert (method.ogd_basis @ raw).abs().max() / raw.norm() > 1e-2  # the raw gradient was not orthogonal
    # It is the orthogonal projection: the removed part lies in span(V).
    removed = raw - projected
    torch.testing.assert_close(method.ogd_basis.T @ (method.ogd_basis @ removed), removed, atol=1e-6, rtol=1e-5)


def test_basis_is_orthonormal_and_spans_ground_truth_logit_gradients():
    model, method, first = _after_one_task()
    basis = method.ogd_basis
    torch.testing.assert_close(basis @ basis.T, torch.eye(len(basis)), atol=1e-5, rtol=0)
    assert method.directions_per_task == [len(first.y)] == [len(basis)]
    # A second implementation of OGD-GTL's gradients: torch.func per-sample ∇θ f_y(x).
    params = {n: p.detach() for n, p in model.named_parameters()}

    def true_logit(p, xi, yi):
        return functional_call(model, p, (xi.unsqueeze(0),))[0].gather(0, yi.unsqueeze(0)).squeeze(0)

    per_sample = vmap(grad(true_logit), in_dims=(None, 0, 0))(params, first.x, first.y)
    gradients = torch.cat([per_sample[n].reshape(len(first.y), -1) for n in params], dim=1)
    for g in gradients:
        assert project_out(g, basis).norm() < 1e-5 * g.norm()


def test_gram_schmidt_matches_a_plain_sequential_implementation():
    g = torch.Generator().manual_seed(0)
    old = torch.linalg.qr(torch.randn(30, 3, generator=g)).Q.T
    vectors = torch.randn(6, 30, generator=g)
    vectors[2] = 2 * vectors[0] - vectors[1]  # dependent on earlier rows: dropped
    vectors[4] = old[1] * 5.0  # in the old span: dropped
    ours = extend_orthonormal_basis(old, vectors)
    # Classical Gram–Schmidt in float64, one vector at a time.
    rows = [r.double() for r in old]
    for v in vectors.double():
        r = v - sum((v @ q) * q for q in rows)
        if r.norm() > 1e-4 * v.norm():
            rows.append(r / r.norm())
    expected = torch.stack(rows).float()
    assert ours.shape == expected.shape == (3 + 4, 30)
    torch.testing.assert_close(ours[:3], old)
    # Same directions up to sign, in the same order.
    torch.testing.assert_close((ours * expected).sum(1).abs(), torch.ones(7), atol=1e-5, rtol=0)
    assert len(extend_orthonormal_basis(old, vectors, max_new=2)) == 5


def test_projecting_twice_equals_projecting_once():
    model, method, _ = _after_one_task()
    _backward_on_new_task(model)
    method.after_backward()
    once = _flat_grad(model).clone()
    method.after_backward()
    torch.testing.assert_close(_flat_grad(model), once, atol=1e-7, rtol=1e-5)


def test_empty_basis_leaves_gradient_unchanged():
    model = tiny_model()
    method = OGD(model, {}, 4)
    _backward_on_new_task(model)
    raw = [p.grad.clone() for p in model.parameters()]
    method.after_backward()
    assert all(torch.equal(p.grad, r) for p, r in zip(model.parameters(), raw))
    assert torch.equal(project_out(raw[0].flatten(), torch.zeros(0, raw[0].numel())), raw[0].flatten())


def test_projected_step_keeps_old_logits_to_first_order_and_sampling_caps_directions():
    model, method, first = _after_one_task()
    old_logits = model(first.x).gather(1, first.y.unsqueeze(1)).detach()

    def change_after_step(project):
        trial = tiny_model()
        trial.load_state_dict(model.state_dict())
        method.model = trial
        _backward_on_new_task(trial)
        if project:
            method.after_backward()
        with torch.no_grad():
            for p in trial.parameters():
                p.sub_(1e-3 * p.grad)
        return (trial(first.x).gather(1, first.y.unsqueeze(1)) - old_logits).abs().max().item()

    assert change_after_step(project=True) < 0.01 * change_after_step(project=False)
    _, capped, _ = _after_one_task(ogd_samples=5, n_per_class=20)
    assert capped.directions_per_task == [5] and len(capped.ogd_basis) == 5


def test_state_round_trip_equals_training_in_one_object():
    def on_reload(restored_model, restored, state):
        assert restored.directions_per_task == [12] and restored.seen_classes == [0, 1]

    (model, method), (restored_model, restored) = train_tasks_with_reload(
        lambda m: OGD(m, {"ogd_samples": 12}, 4), lambda: tiny_model(seed=5), on_reload=on_reload)
    assert_same_weights(model, restored_model)
    assert torch.equal(restored.ogd_basis, method.ogd_basis) and method.directions_per_task == [12, 12]
    torch.testing.assert_close(method.ogd_basis @ method.ogd_basis.T, torch.eye(24), atol=1e-5, rtol=0)
    assert set(model.state_dict()) == set(tiny_model().state_dict())
