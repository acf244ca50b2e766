import io

import torch

from clgrid.methods import TaskData
from clgrid.models import build_model
from clgrid.train import fit_task, task_generator

# The train_cfg the method tests share: plain SGD, two short epochs.
TRAIN = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "epochs": 2, "batch_size": 8}


def tiny_model(seed=0, n_classes=4):
    torch.manual_seed(seed)
    return build_model({"arch": "mlp", "hidden": [16]}, [1, 2, 3], n_classes)


def task(task_id, classes, n_per_class=10, seed=0):
    g = torch.Generator().manual_seed(seed + 100 * task_id)
    y = torch.tensor([c for c in classes for _ in range(n_per_class)])
    x = torch.randn(len(y), 1, 2, 3, generator=g) + y.view(-1, 1, 1, 1).float()
    return TaskData(task_id, x, y, list(classes))


def two_tasks():
    """Task 0 on classes 0, 1 and task 1 on classes 2, 3."""
    return [task(0, [0, 1]), task(1, [2, 3])]


def fit(model, method, tasks, t, train_cfg=TRAIN):
    """Train task ``t`` as a job does: the method's training data, then ``fit_task`` with the task's generator."""
    data = method.training_data(tasks[t], lambda i: tasks[i])
    fit_task(model, method, data, train_cfg, task_generator(0, t))


def save_and_load(model, method, weights_only=True):
    """``torch.save`` model and method state to memory and load it back, as a checkpoint between jobs."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "method": method.state_dict()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=weights_only)


def restore(saved, make_model, make_method):
    """A fresh model from ``make_model()`` and method from ``make_method(model)``, both loaded from ``saved``."""
    model = make_model()
    model.load_state_dict(saved["model"])
    method = make_method(model)
    method.load_state_dict(saved["method"])
    return model, method


def save_and_reload(model, method, make_model, make_method, weights_only=True):
    """``save_and_load`` then ``restore``: the (model, method) a next job would start from."""
    return restore(save_and_load(model, method, weights_only), make_model, make_method)


def train_tasks_with_reload(make_method, make_model, model=None, tasks=None, train_cfg=TRAIN, on_reload=None,
                            weights_only=True):
    """Train tasks 0 and 1 in one object, and again with a save/reload into fresh objects before task 1.

    ``model`` (default ``tiny_model()``) and ``make_method(model)`` train task 0; their state is saved, then they
    train task 1. The saved state is loaded into ``make_model()`` and a new ``make_method``; ``on_reload(model,
    method, saved)`` may check it before that pair trains task 1 too. Returns ``(continuous, reloaded)``, each a
    ``(model, method)`` pair.
    """
    tasks = two_tasks() if tasks is None else tasks
    model = tiny_model() if model is None else model
    method = make_method(model)
    fit(model, method, tasks, 0, train_cfg)
    saved = save_and_load(model, method, weights_only)
    fit(model, method, tasks, 1, train_cfg)
    fresh, restored = restore(saved, make_model, make_method)
    if on_reload is not None:
        on_reload(fresh, restored, saved)
    fit(fresh, restored, tasks, 1, train_cfg)
    return (model, method), (fresh, restored)


def assert_same_weights(model, other):
    """Same state-dict keys in the same order, every tensor bit-identical."""
    a, b = model.state_dict(), other.state_dict()
    assert list(a) == list(b)
    for n, t in a.items():
        assert torch.equal(t, b[n]), n
