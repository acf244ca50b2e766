"""clgrid's SGD and Adam take exactly the steps torch.optim takes (a second implementation)."""

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


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4)])
def test_sgd_matches_torch(momentum, weight_decay):
    model, ref = _trajectory(lambda a, b: (
        SGD(a, lr=0.1, momentum=momentum, weight_decay=weight_decay),
        torch.optim.SGD(b, lr=0.1, momentum=momentum, weight_decay=weight_decay)))
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_matches_torch(weight_decay):
    model, ref = _trajectory(lambda a, b: (
        Adam(a, lr=1e-2, weight_decay=weight_decay), torch.optim.Adam(b, lr=1e-2, weight_decay=weight_decay)))
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
