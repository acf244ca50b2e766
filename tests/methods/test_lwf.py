"""LwF: the distillation term is zero when the new and old models agree, positive once they differ."""

import torch
import torch.nn.functional as F

from clgrid.methods.lwf import LwF, distillation_loss
from clgrid.train import task_generator
from tests.methods.helpers import task, tiny_model


def test_distillation_zero_iff_logits_agree():
    z = torch.randn(8, 5)
    assert distillation_loss(z, z.clone(), 2.0).item() == 0.0
    assert distillation_loss(z + torch.randn(8, 5), z, 2.0).item() > 0.0
    # Shifting all logits of a sample leaves its softmax, hence the loss, unchanged.
    torch.testing.assert_close(distillation_loss(z + 3.0, z, 2.0), torch.zeros(()), atol=1e-6, rtol=0)


def test_lwf_loss_equals_ce_at_task_start_then_adds_distillation():
    model = tiny_model()
    method = LwF(model, {"lwf_alpha": 1.0, "temperature": 2.0}, 4)
    method.before_task(task(0, [0, 1]), task_generator(0, 0))
    assert method.old_model is None  # nothing to distil from on the first task
    method.after_task(task(0, [0, 1]))
    new = task(1, [2, 3])
    method.before_task(new, task_generator(0, 1))
    logits = model(new.x)
    # The old model is a frozen copy of the current one, so only cross-entropy remains.
    torch.testing.assert_close(method.loss(new.x, new.y, logits), F.cross_entropy(logits, new.y))
    with torch.no_grad():
        model.head.weight[:2].mul_(-1)
    logits = model(new.x)
    assert method.loss(new.x, new.y, logits) > F.cross_entropy(logits, new.y)
    assert all(not p.requires_grad for p in method.old_model.parameters())


def test_the_seen_class_index_is_built_once_per_task_not_every_step(monkeypatch):
    # A host list made a device tensor in every loss call is a blocking host-to-device copy per step on a GPU.
    from tests.methods.helpers import fit, two_tasks

    model, tasks = tiny_model(), two_tasks()
    method = LwF(model, {}, 4)
    fit(model, method, tasks, 0)
    calls = []
    as_tensor = torch.as_tensor
    monkeypatch.setattr(torch, "as_tensor", lambda *args, **kwargs: calls.append(args) or as_tensor(*args, **kwargs))
    fit(model, method, tasks, 1)  # 20 samples at batch 8 for 2 epochs: 6 steps, each distilling on classes 0, 1
    assert calls == [([0, 1],)]
    assert method.old_classes.tolist() == [0, 1]
