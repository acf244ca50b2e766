"""The training loop's options: gradient clipping by value, and augmentation applied to training batches only."""

import torch

from clgrid.methods.base import Method
from clgrid.train import fit_task, task_generator
from tests.methods.helpers import task, tiny_model

TRAIN = {"optimizer": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0, "epochs": 1, "batch_size": 40}


def test_clip_grad_value_bounds_every_step():
    data = task(0, [0, 1], n_per_class=20)
    data.x.mul_(1000.0)  # huge inputs: unclipped gradients far above 0.01
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit_task(model, Method(model, {}, 4), data, {**TRAIN, "clip_grad_value": 0.01}, task_generator(0, 0))
    for n, p in model.named_parameters():
        assert (p.detach() - before[n]).abs().max() <= 0.01 * TRAIN["lr"] + 1e-6, n  # one step, |g| ≤ 0.01


def test_augment_sees_training_batches_and_leaves_task_data_alone():
    data = task(0, [0, 1], n_per_class=20)
    stored = data.x.clone()
    seen = []
    model = tiny_model()
    method = Method(model, {}, 4)
    fit_task(model, method, data, {**TRAIN, "lr": 0.01, "batch_size": 10}, task_generator(0, 0),
             augment=lambda x: seen.append(len(x)) or x.flip(-1))
    assert seen == [10, 10, 10, 10] and torch.equal(data.x, stored) and method.augment is not None
