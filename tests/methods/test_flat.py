"""Flat-vector penalties: ``squared_distance`` gives the per-parameter formula's value and, bit for bit, its
gradients; the methods built on it (EWC, online EWC, SI, L2) match their per-parameter formulas; ``FlatLayout``
views share the flat vector's memory and a state over other parameters is refused with their names."""

import pytest
import torch

from clgrid.methods.parts.flat import FlatLayout, squared_distance
from clgrid.methods.ewc import EWC, OnlineEWC, ewc_penalty
from clgrid.methods.l2_init import L2Init
from clgrid.methods.si import SynapticIntelligence
from tests.methods.helpers import fit, tiny_model, two_tasks

TASKS = two_tasks()


def test_worked_example():
    # θ = (1, 2 | 3), a = (0, 1 | 1), w = (1, 3 | 2):  Σ w(θ − a)² = 1·1 + 3·1 + 2·4 = 12; × ½ = 6.
    # Gradient ½ · 2w(θ − a) = (1, 3 | 4).
    first, second = torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[3.0]], requires_grad=True)
    layout = FlatLayout([("first", first), ("second", second)])
    value = squared_distance(layout, [first, second], [torch.tensor([0.0, 1.0, 1.0])],
                             [torch.tensor([1.0, 3.0, 2.0])], scale=0.5)
    assert value.item() == 6.0
    value.backward()
    assert first.grad.tolist() == [1.0, 3.0] and second.grad.tolist() == [[4.0]]


def _per_parameter(params, anchors, weights, scale):
    """The formula as the methods wrote it before: one small expression per parameter and anchor."""
    total = torch.zeros(())
    for anchor, weight in zip(anchors, weights):
        for p, a, w in zip(params, anchor, weight):
            total = total + scale * ((p - a) ** 2 if w is None else w * (p - a) ** 2).sum()
    return total


@pytest.mark.parametrize("n_anchors", [1, 3])
@pytest.mark.parametrize("weighted", [True, False])
def test_gradients_equal_autograd_of_the_per_parameter_formula_bit_for_bit(n_anchors, weighted):
    g = torch.Generator().manual_seed(0)
    model = tiny_model(seed=1)
    params = list(model.parameters())
    layout = FlatLayout(list(model.named_parameters()))
    anchors = [[p.detach() + 0.1 * torch.randn(p.shape, generator=g) for p in params] for _ in range(n_anchors)]
    weights = [[torch.rand(p.shape, generator=g) if weighted else None for p in params] for _ in range(n_anchors)]
    x = torch.randn(5, 1, 2, 3, generator=g)
    lam = 7.3

    def grads(penalty_fn):
        # As in the loop: the model's forward first, then the penalty (autograd sums a parameter's gradients in
        # the reverse order of their creation, so the order of the two matters to the last bit).
        task_loss = model(x).logsumexp(1).mean()
        penalty = penalty_fn()
        return torch.autograd.grad(task_loss + lam * penalty, params), penalty.detach()

    expected, expected_value = grads(lambda: _per_parameter(params, anchors, weights, 0.5))
    flat_weights = [layout.flatten(w) if weighted else None for w in weights]
    flat_anchors = [layout.flatten(a) for a in anchors]
    ours, value = grads(lambda: squared_distance(layout, params, flat_anchors, flat_weights, 0.5))
    for e, o in zip(expected, ours):
        assert torch.equal(e, o)
    torch.testing.assert_close(value, expected_value)  # the value's sum runs in another order: equal to rounding


def test_layout_views_share_memory_and_mismatched_state_is_refused():
    model = tiny_model()
    layout = FlatLayout(list(model.named_parameters()))
    flat = torch.zeros(layout.numel)
    views = layout.named_views(flat)
    views["head.bias"] += 1.0
    assert flat.sum().item() == model.head.bias.numel()
    state = {n: p.detach() for n, p in model.named_parameters()}
    assert torch.equal(layout.flatten_named(state), layout.flatten([p.detach() for p in model.parameters()]))
    del state["head.bias"]
    with pytest.raises(ValueError, match=r"missing \['head.bias'\].*same backbone and freeze settings"):
        layout.flatten_named(state, "EWC Fisher")


def test_ewc_penalties_equal_the_per_parameter_formula_after_two_tasks():
    for make in (lambda m: EWC(m, {"ewc_lambda": 10.0}, 4), lambda m: OnlineEWC(m, {"gamma": 0.5}, 4)):
        model = tiny_model()
        method = make(model)
        fit(model, method, TASKS, 0)
        fit(model, method, TASKS, 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05)
        if isinstance(method, EWC):
            assert len(method.fisher_diags) == 2
            expected = ewc_penalty(model, method.fisher_diags, method.anchors)
        else:
            decayed = {n: 0.5 * f for n, f in method.running_fisher.items()}
            expected = ewc_penalty(model, [decayed], [method.anchor])
        torch.testing.assert_close(method.penalty(), expected)


def test_si_and_l2_penalties_equal_the_per_parameter_formula():
    model = tiny_model()
    si = SynapticIntelligence(model, {}, 4)
    l2 = L2Init(model, {"anchor": "init"}, 4)
    fit(model, si, TASKS, 0)
    l2.before_task(TASKS[1], torch.Generator())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    named = dict(model.named_parameters())
    expected_si = sum((si.importance[n] * (named[n] - si.anchor[n]) ** 2).sum() for n in named)
    torch.testing.assert_close(si.penalty(), expected_si)
    expected_l2 = sum(0.5 * ((named[n] - l2.anchor_weights[n]) ** 2).sum() for n in named)
    torch.testing.assert_close(l2.penalty(), expected_l2)


def test_a_state_of_separate_tensors_loads_and_its_dicts_become_views():
    # What the per-parameter code saved: a dict of independent tensors per name. It loads into flat vectors.
    model = tiny_model()
    method = EWC(model, {}, 4)
    fit(model, method, TASKS, 0)
    old_format = {**method.state_dict(), "fisher_diags": [{n: f.clone() for n, f in method.fisher_diags[0].items()}],
                  "anchors": [{n: a.clone() for n, a in method.anchors[0].items()}]}
    restored = EWC(tiny_model(), {}, 4)
    restored.load_state_dict(old_format)
    assert torch.equal(restored.fisher_flat[0], method.fisher_flat[0])
    restored.fisher_diags[0]["head.weight"].mul_(2)  # a view: the flat vector the penalty reads changes with it
    assert not torch.equal(restored.fisher_flat[0], method.fisher_flat[0])
