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
