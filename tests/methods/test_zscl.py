"""ZSCL's loss terms against a direct computation, no distillation gradient into the text encoder, and the
running-mean weight ensemble, on a tiny random CLIP (no download)."""

import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip")

from clgrid.methods import METHODS  # noqa: E402
from clgrid.methods.base import TaskData  # noqa: E402
from clgrid.methods.zscl import BUILTIN_SENTENCES, soft_cross_entropy  # noqa: E402
from clgrid.models import build_model  # noqa: E402
from tests.conftest import REPO  # noqa: E402

TINY = {"arch": "clip", "model": "ViT-Tiny-8", "model_config": str(REPO / "tests/fixtures/ViT-Tiny-8.json"),
        "pretrained": None, "train_mode": "whole", "templates": ["a photo of a {}."], "cache_dir": None}


def _setup(params=None, mode="whole", seed=0):
    torch.manual_seed(seed)
    model = build_model({**TINY, "train_mode": mode}, [3, 32, 32], 4, class_names=["cat", "dog", "car", "tree"])
    method = METHODS["zscl"](model, {"reference_size": 12, "reference_batch_size": 5, **(params or {})}, 4)
    g = torch.Generator().manual_seed(1)
    task = TaskData(0, torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.tensor([0, 1] * 8), [0, 1])
    method.before_task(task, torch.Generator().manual_seed(2))
    return model, method, task


def test_soft_cross_entropy_by_hand():
    # teacher [0, ln 3] at T = 1 → targets [1/4, 3/4]; student [0, 0] → log-probs ln ½ each: −(ln ½) = ln 2.
    loss = soft_cross_entropy(torch.zeros(1, 2), torch.tensor([[0.0, torch.log(torch.tensor(3.0))]]), 1.0)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)
    assert soft_cross_entropy(torch.zeros(1, 2), torch.zeros(1, 2), 2.0).item() == pytest.approx(4 * 0.693147, 1e-5)


def test_teacher_is_the_initial_model_on_the_reference_set():
    model, method, task = _setup()
    assert method.reference_x.shape == (12, 3, 32, 32) and method.reference_x.dtype == torch.uint8
    with torch.no_grad():
        torch.testing.assert_close(method.teacher_image, F.normalize(model.features(method.reference_x), dim=-1))
        import open_clip
        tokens = open_clip.tokenize(BUILTIN_SENTENCES, context_length=16)
        torch.testing.assert_close(method.teacher_text, F.normalize(model.head.text.encode_text(tokens), dim=-1))


def test_each_loss_term_equals_a_direct_computation():
    model, method, task = _setup({"l2_weight": 0.5, "distill_weight": 0.7})
    x, y = task.x[:6], task.y[:6]
    logits = model(x)
    state = method.generator.get_state()
    total = method.loss(x, y, logits)
    method.generator.set_state(state)
    x_ref, teacher_image = method.reference_batch()
    # Direct: task CE with label smoothing 0.2, both distillation directions at T = 2 (× T²), L2 to the start (0 now).
    ce = F.cross_entropy(logits, y, label_smoothing=0.2)
    scale = model.head.logit_scale.exp()
    student = scale * F.normalize(model.features(x_ref), dim=-1) @ method.teacher_text.t()
    teacher = scale * teacher_image @ method.teacher_text.t()
    i2t = -(F.softmax(teacher / 2, 1) * F.log_softmax(student / 2, 1)).sum(1).mean() * 4
    t2i = -(F.softmax(teacher.t() / 2, 1) * F.log_softmax(student.t() / 2, 1)).sum(1).mean() * 4
    torch.testing.assert_close(total, ce + 0.7 * (i2t + t2i))
    # Move one weight: the L2 term is 0.5 × the squared change.
    with torch.no_grad():
        model.head.text.token_embedding.weight[0, 0] += 0.1
    assert method.l2_to_start().item() == pytest.approx(0.01, rel=1e-4)


def test_distillation_gives_the_text_encoder_no_gradient():
    model, method, _ = _setup()
    method.distillation(*method.reference_batch()).backward()
    text_grads = [p.grad for n, p in model.named_parameters() if n.startswith("head.text.")]
    assert text_grads and all(g is None or torch.count_nonzero(g) == 0 for g in text_grads)
    image_grads = [p.grad for n, p in model.named_parameters() if n.startswith("backbone.")]
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in image_grads)


def test_weight_ensemble_is_the_running_mean_of_snapshots():
    model, method, task = _setup({"ensemble_every": 2, "distill_weight": 0.0})
    name = "backbone.conv1.weight"
    snapshots = [model.state_dict()[name].clone()]  # the task's start weights count first
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in range(1, 7):
        optimizer.zero_grad()
        method.loss(task.x[:8], task.y[:8], model(task.x[:8])).backward()
        optimizer.step()
        method.after_step()
        if step % 2 == 0:
            snapshots.append(model.state_dict()[name].clone())
    method.after_task(task)
    torch.testing.assert_close(model.state_dict()[name], torch.stack(snapshots).mean(0))


def test_state_survives_a_save_and_needs_clip(tmp_path):
    model, method, task = _setup()
    path = tmp_path / "m.pt"
    torch.save(method.state_dict(), path)
    fresh = METHODS["zscl"](model, {}, 4)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(fresh.teacher_text, method.teacher_text) and torch.equal(fresh.reference_x, method.reference_x)
    with pytest.raises(ValueError, match="use a backbone with arch: clip"):
        METHODS["zscl"](build_model({"arch": "mlp", "hidden": [8]}, [1, 8, 8], 4), {}, 4)
    with pytest.raises(ValueError, match="train_mode whole or text"):
        _setup(mode="image_fc")
    with pytest.raises(FileNotFoundError, match="one caption per line"):
        _setup({"reference_sentences": str(tmp_path / "none.txt")})
    captions = tmp_path / "captions.txt"
    captions.write_text("a dog.\n\na cat.\n")
    assert json.dumps(_setup({"reference_sentences": str(captions)})[1].teacher_text.shape[0]) == "2"


def test_weight_ensemble_step_is_the_per_tensor_formula_bit_for_bit(monkeypatch):
    # θ̄ moves by three torch._foreach_* calls over lists built once per task; the per-tensor loop they replaced is
    # the reference, to the last bit, at every ensembling of a task the loop trains. And the model's state dict
    # is walked once for it per task, not at every ensembling.
    from clgrid.train import fit_task, task_generator

    checks = []

    class Checked(METHODS["zscl"]):
        def after_step(self):
            averages = {n: t.clone() for n, t in self.average_weights.items()}
            current = {n: t.clone() for n, t in self.model.state_dict().items()}
            super().after_step()
            for n, avg in averages.items():  # the loop as it was
                avg.add_((current[n] - avg) / (self.ensemble_count + 1))
            checks.append(all(torch.equal(averages[n], t) for n, t in self.average_weights.items()))

    torch.manual_seed(0)
    model = build_model(TINY, [3, 32, 32], 4, class_names=["cat", "dog", "car", "tree"])
    method = Checked(model, {"reference_size": 12, "reference_batch_size": 5, "ensemble_every": 1}, 4)
    g = torch.Generator().manual_seed(1)
    data = TaskData(0, torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.tensor([0, 1] * 8), [0, 1])
    walks = []
    state_dict = model.state_dict
    monkeypatch.setattr(model, "state_dict", lambda *a, **k: walks.append(k.get("keep_vars", False)) or
                        state_dict(*a, **k))
    fit_task(model, method, data, {"optimizer": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0,
                                   "epochs": 2, "batch_size": 8}, task_generator(0, 0))
    assert checks == [True] * 4
    assert walks.count(True) == 1  # the pairing, once (the others: θ_start, θ̄ and after_task's ensembling)


def test_reference_batch_draws_as_before_from_images_moved_once_per_task(monkeypatch):
    model, method, task = _setup()
    assert method.reference_on_device is not None  # set by before_task (on the CPU: the very same tensor)
    state = method.generator.get_state()
    moves = []
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: moves.append((t.dtype, k.get("non_blocking"))) or
                        to(t, *a, **k))
    x_ref, teacher_image = method.reference_batch()
    # The batch the code before drew: indices from the task generator, rows of the host images.
    idx = torch.randint(12, (5,), generator=torch.Generator().set_state(state))
    assert torch.equal(x_ref, method.reference_x[idx]) and torch.equal(teacher_image, method.teacher_image[idx])
    assert moves == [(torch.int64, True)]  # only the index moves per batch, without waiting for the device
    method.after_task(task)
    assert method.reference_on_device is None  # the device copy lives for a task
