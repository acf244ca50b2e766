"""clgrid's SGD and Adam take exactly the steps torch.optim takes (a second implementation): bit for bit on the
CPU, against both of torch.optim's implementations (per-parameter and foreach)."""

import copy

import pytest
import torch

from clgrid.optim import SGD, Adam


def _trajectory(make_opt, steps=6):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    ref = copy.deepcopy(model)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    ours, theirs = make_opt(model.parameters(), ref.parameters())
    for _ in range(steps):
        for m, opt in ((model, ours), (ref, theirs)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    return model, ref


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4)])
def test_sgd_matches_torch(momentum, weight_decay, foreach):
    model, ref = _trajectory(lambda a, b: (
        SGD(a, lr=0.1, momentum=momentum, weight_decay=weight_decay),
        torch.optim.SGD(b, lr=0.1, momentum=momentum, weight_decay=weight_decay, foreach=foreach)))
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_matches_torch(weight_decay, foreach):
    model, ref = _trajectory(lambda a, b: (
        Adam(a, lr=1e-2, weight_decay=weight_decay),
        torch.optim.Adam(b, lr=1e-2, weight_decay=weight_decay, foreach=foreach)))
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: Adam(ps, lr=1e-2)])
def test_parameters_without_gradient_are_left_alone(make):
    # A frozen head or an unused extra parameter: no gradient, no step (and no momentum buffer) for it.
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = make([used, unused])
    for _ in range(2):
        opt.zero_grad()
        (used * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
        opt.step()
    assert torch.equal(unused, torch.ones(2)) and not torch.equal(used, torch.ones(3))


def test_grad_scaler_unscales_the_gradients_through_param_groups():
    # fp16 training (train.precision: fp16) has torch.amp.GradScaler unscale these optimizers' gradients: it finds
    # them through param_groups, and records an inf for update() to halve the scale.
    from torch.amp import GradScaler

    w = torch.nn.Parameter(torch.ones(2))
    opt, scaler = SGD([w], lr=0.5), GradScaler("cpu", init_scale=1024.0)
    scaler.scale((w * torch.tensor([1.0, 2.0])).sum()).backward()
    scaler.unscale_(opt)
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0]))  # the true gradient, not 1024 times it
    opt.step()
    scaler.update()
    assert torch.equal(w.detach(), torch.tensor([0.5, 0.0])) and scaler.get_scale() == 1024.0
    opt.zero_grad()
    scaler.scale((w * torch.tensor([float("inf"), 1.0])).sum()).backward()
    scaler.unscale_(opt)
    scaler.update()
    assert scaler.get_scale() == 512.0
