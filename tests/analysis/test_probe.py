"""The linear probe separates what is linearly separable and fails on what is not."""

import numpy as np

from clgrid.analysis.probe import linear_probe_accuracy

RNG = np.random.default_rng(0)


def test_separable_features_give_100_percent():
    centres = 5 * np.eye(4, 8)
    y = np.repeat(np.arange(4), 50)
    x = centres[y] + 0.3 * RNG.normal(size=(200, 8))
    assert linear_probe_accuracy(x[::2], y[::2], x[1::2], y[1::2]) == 100.0


def test_xor_is_not_linearly_separable():
    x = RNG.uniform(-1, 1, size=(400, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(int)
    assert linear_probe_accuracy(x[:200], y[:200], x[200:], y[200:]) < 70.0


def test_sgd_probe_learns_separable_features_and_its_learning_rate_matters():
    from clgrid.analysis.probe import fit_sgd_probe

    centres = 5 * np.eye(4, 8)
    y = np.repeat(np.arange(4), 50)
    x = centres[y] + 0.3 * RNG.normal(size=(200, 8))
    probe = fit_sgd_probe(x[::2], y[::2], n_classes=4, lr=0.1, epochs=5, batch_size=16, momentum=0.9, seed=0)
    assert np.mean(probe(x[1::2]) == y[1::2]) == 1.0
    # lr x multiplier this small leaves the N(0, 0.01²) start nearly untouched after one epoch: far from 100 %.
    timid = fit_sgd_probe(x[::2], y[::2], n_classes=4, lr=1e-6, epochs=1, batch_size=16, seed=0)
    assert np.mean(timid(x[1::2]) == y[1::2]) < 0.6
    # Same seed, same probe; the classes it can predict are all n_classes (global labels), not only those seen.
    again = fit_sgd_probe(x[::2], y[::2], n_classes=4, lr=0.1, epochs=5, batch_size=16, momentum=0.9, seed=0)
    assert np.array_equal(probe(x), again(x))


def test_sgd_probe_is_one_plain_sgd_step_by_hand():
    import torch

    from clgrid.analysis.probe import fit_sgd_probe

    x = np.array([[1.0, 2.0], [-1.0, 0.5], [0.5, -2.0]])
    y = np.array([0, 1, 2])
    probe = fit_sgd_probe(x, y, n_classes=3, lr=0.5, epochs=1, batch_size=3, seed=7)  # one full-batch step
    g = torch.Generator().manual_seed(7)
    w = (0.01 * torch.randn(3, 2, generator=g)).double()
    b = torch.zeros(3, dtype=torch.float64)
    xt = torch.tensor(x)
    p = torch.softmax(xt @ w.T + b, 1)
    onehot = torch.eye(3, dtype=torch.float64)[torch.tensor(y)]
    w1 = w - 0.5 * (p - onehot).T @ xt / 3  # ∂CE/∂W = (p − y)ᵀx / N
    b1 = b - 0.5 * (p - onehot).mean(0)
    grid = np.array([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0], [1.0, -1.0]])
    expected = (torch.tensor(grid) @ w1.T + b1).argmax(1).numpy()
    assert np.array_equal(probe(grid), expected)
