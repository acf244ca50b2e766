"""Evidence for the iCaRL gap on Seq-MNIST (docs/der_split_mnist.md): the DER paper's code replays black exemplars.

In aimagelab/mammoth at the paper's commit (c66408f, models/icarl.py, begin_task), the stored MNIST exemplars are
float tensors in [0, 1] appended to the uint8 training images with ``self.buffer.examples[i].type(torch.uint8)``
(no x255), so every replayed exemplar becomes an almost black image (pixels 0, or 1/255 where the original was 1.0)
that still carries its old-class label; the class means for nearest-mean classification are computed from the
correct exemplars. The fix came later (mammoth's 2022 ``icarl_replay``: ``(x.cpu()*255).squeeze(1).type(torch.uint8)``).

This script runs clgrid's iCaRL on the DER Split-MNIST protocol (seed 0..2) as it is, and with exactly that cast
applied to the exemplars it trains on (not to the ones its class means come from), through the same job functions
as the DAG.
    .venv/bin/python docs/evidence/icarl_mnist_exemplar_cast.py   # needs ../shared/data/mnist.npz
"""

import sys
import tempfile

import torch

from clgrid.inprocess import run_cell, validated
from clgrid.methods import icarl
from clgrid.methods.base import TaskData

config = validated("config/experiments/der_split_mnist.yaml", "workflow/schemas/config.schema.yaml",
                   datasets={"mnist": {"npz": "../shared/data/mnist.npz"}})
seeds = [int(s) for s in sys.argv[1:]] or [0, 1, 2]


def mammoth_cast_training_data(self, task, load_task):
    data = original(self, task, load_task)
    if self.exemplar_x is None or len(self.exemplar_y) == 0:
        return data
    n = self._n_task_samples
    as_float = self.exemplar_x.float() / 255.0                 # Mammoth's MNIST exemplars: floats in [0, 1]
    cast = as_float.to(torch.uint8)                            # .type(torch.uint8) without x255: 0, or 1 where 1.0
    return TaskData(data.task_id, torch.cat([data.x[:n], cast]), data.y, data.classes)


original = icarl.ICaRL.training_data
for label, patch in (("clgrid iCaRL", None), ("with the DER code's exemplar cast", mammoth_cast_training_data)):
    accs = []
    for seed in seeds:
        icarl.ICaRL.training_data = patch or original
        with tempfile.TemporaryDirectory() as tmp:
            accs.append(run_cell(config, "split_mnist", "mlp", "icarl_500", seed, tmp)["metrics"]["acc"])
    icarl.ICaRL.training_data = original
    mean = sum(accs) / len(accs)
    print(f"{label:<36} class-IL ACC per seed {', '.join(f'{a:.2f}' for a in accs)}; mean {mean:.2f}")
