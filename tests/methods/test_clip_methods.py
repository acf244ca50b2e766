"""The MTIL table's other rows on CLIP: LwF (on the image-text logits), iCaRL, WiSE-FT, L2-init and an EMA teacher
train a tiny open_clip model through two tasks, keep their state across a save, and learn."""


import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from clgrid.methods import TaskData, get_method  # noqa: E402
from clgrid.models.clip import ClipNet, load_open_clip  # noqa: E402
from tests.methods.helpers import fit, restore, save_and_load  # noqa: E402
from tests.models.test_clip import tiny_name  # noqa: E402,F401 (the registered tiny CLIP fixture)

CLASSES = ["cat", "dog", "car", "ship"]


def _tasks():
    tasks = []
    for t, classes in enumerate(([0, 1], [2, 3])):
        g = torch.Generator().manual_seed(t)
        y = torch.tensor([c for c in classes for _ in range(8)])
        x = torch.randint(0, 256, (len(y), 3, 32, 32), dtype=torch.uint8, generator=g)
        tasks.append(TaskData(t, x, y, classes))
    return tasks


@pytest.mark.parametrize("mode", ["whole", "image_fc"])
@pytest.mark.parametrize("name, params", [("lwf", {}), ("icarl", {"memory_size": 8}), ("wise_ft", {}),
                                          ("l2_init", {}), ("kd_ema", {})])
def test_method_trains_clip_through_two_tasks(tiny_name, name, params, mode):
    def make_model():
        torch.manual_seed(0)
        clip, tokenizer = load_open_clip(tiny_name, None)
        return ClipNet(clip, tokenizer, CLASSES, mode)

    def make_method(model):
        return get_method(name)(model, params, len(CLASSES))

    model = make_model()
    method = make_method(model)
    tasks = _tasks()
    train = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0, "epochs": 1, "batch_size": 8}
    start = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, method, tasks, 0, train)
    model, method = restore(save_and_load(model, method), make_model, make_method)  # a job boundary
    fit(model, method, tasks, 1, train)
    end = model.state_dict()
    assert any(not torch.equal(start[k], end[k]) for k in start if k.startswith("backbone."))
    scores = method.predict(tasks[1].x)
    assert scores.shape == (16, len(CLASSES)) and torch.isfinite(scores).all()
