import torch

from clgrid.methods import TaskData
from clgrid.models import build_model


def tiny_model(seed=0, n_classes=4):
    torch.manual_seed(seed)
    return build_model({"arch": "mlp", "hidden": [16]}, [1, 2, 3], n_classes)


def task(task_id, classes, n_per_class=10, seed=0):
    g = torch.Generator().manual_seed(seed + 100 * task_id)
    y = torch.tensor([c for c in classes for _ in range(n_per_class)])
    x = torch.randn(len(y), 1, 2, 3, generator=g) + y.view(-1, 1, 1, 1).float()
    return TaskData(task_id, x, y, list(classes))
