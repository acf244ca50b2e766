"""analysis.run: which probe and which RankMe the analysis settings choose (absent keys: the defaults as before)."""

from types import SimpleNamespace

import numpy as np
import torch

from clgrid.analysis import probe as probe_module
from clgrid.analysis import run


def _spec(analysis, train=None):
    train = train or {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32}
    return SimpleNamespace(analysis={"probe_c": 1.0, "probe_samples": 50, **analysis}, train_settings=train, seed=3)


def test_probe_lr_mult_picks_the_sgd_probe_at_the_runs_lr_times_the_multiplier(monkeypatch):
    calls = {}
    monkeypatch.setattr(probe_module, "fit_sgd_probe", lambda *a: calls.setdefault("sgd", a))
    monkeypatch.setattr(probe_module, "fit_linear_probe", lambda *a: calls.setdefault("logistic", a))
    run._fit_probe(_spec({}), "F", "Y", 10)
    assert calls.pop("logistic") == ("F", "Y", 1.0, 3)  # absent: logistic regression, as before
    run._fit_probe(_spec({"probe_lr_mult": 5.0}), "F", "Y", 10)
    assert calls["sgd"] == ("F", "Y", 10, 0.5, 1, 32, 0.9, 1e-4, 3)  # lr 0.1 x 5, one epoch when absent
    calls.clear()
    run._fit_probe(_spec({"probe_lr_mult": 0.5, "probe_epochs": 4}, {"lr": 0.2, "batch_size": 8}), "F", "Y", 4)
    assert calls["sgd"] == ("F", "Y", 4, 0.1, 4, 8, 0.0, 0.0, 3)


class _Scaled(torch.nn.Module):
    """features(x) = x with sample 0 scaled by 1000: its direction owns the unnormalised spectrum."""

    def features(self, x):
        return x * torch.tensor([1000.0] + [1.0] * (len(x) - 1))[:, None]


def test_rankme_normalize_reaches_the_per_task_rankme(monkeypatch):
    monkeypatch.setattr(run, "_fit_probe", lambda *a: (lambda f: np.zeros(len(f), dtype=int)))
    x_eval = torch.eye(4)  # four orthogonal samples
    data = SimpleNamespace(x=torch.eye(4), y=torch.tensor([0, 1, 0, 1]))
    args = ([_Scaled()], x_eval, [data], [data], np.random.default_rng(0))
    plain, _ = run._rankme_and_probe(_spec({}), *args)
    normalised, _ = run._rankme_and_probe(_spec({"rankme_normalize": True}), *args)
    assert plain[0] < 1.1 and abs(normalised[0] - 4.0) < 1e-4
