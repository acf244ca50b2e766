"""Dark Experience Replay, DER and DER++ (Buzzega et al. 2020, NeurIPS, "Dark Experience for General
Continual Learning: a Strong, Simple Baseline", Sec. 3 and Algorithm 1).

    DER:    L = CE(h(x), y) + α · ‖h(x′) − z′‖²
    DER++:  L = CE(h(x), y) + α · ‖h(x′) − z′‖² + β · CE(h(x″), y″)

(x′, z′) and (x″, y″) are two independent draws from a reservoir buffer that
stores, for each sample it keeps, the input, the label and the logits z the
model produced for it *when it was stored* (detached). ‖·‖² is the mean squared
error over logits, as in the authors' code (``F.mse_loss``).

The buffer is filled during training from the batches the loop shows (reservoir
sampling over that stream, Vitter's Algorithm R): each batch is offered after
its optimizer step, with the logits of the forward pass that produced the loss,
so they are the pre-step model's logits, as in Algorithm 1. As in the authors'
code every epoch's batches are stream samples, so ``n_seen`` counts a sample
once per epoch, and a sample may sit in the buffer more than once with the
logits of different epochs.

Defaults: buffer 200 and, for that buffer, the paper's best hyperparameters on
Seq-MNIST (class-incremental split MNIST with an MLP, the setting closest to
split digits; appendix table of chosen hyperparameters, mirrored in the authors'
``mammoth`` repository, ``utils/best_args.py``): DER α = 0.2; DER++ α = 0.2,
β = 1.0. The paper draws buffer batches of its own ``minibatch_size``; here
``replay_batch_size`` (null = the training batch size, as Replay does).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, register
from clgrid.methods.parts.buffers import ReservoirBuffer


@register("der")
class DER(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "buffer_size": {
            "description": ("samples in the reservoir buffer, filled from the training batches (Buzzega et al. 2020 use"
                            " 200, 500, 5120)"),
            "type": "integer", "minimum": 1, "default": 200,
        },
        "replay_batch_size": {
            "description": "buffer samples drawn for each replay term (null = the batch size)",
            "type": ["integer", "null"], "minimum": 1, "default": None,
        },
        "der_alpha": {
            "description": ("α of Buzzega et al. 2020, weight of the MSE between current and stored logits (0.2: their "
                            "Seq-MNIST, buffer 200)"),
            "type": "number", "minimum": 0, "default": 0.2,
        },
    }
    FACTS: dict[str, Any] = {"paper": "Buzzega et al. 2020, NeurIPS", "buffer_params": ["buffer_size"]}

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        # Inputs where the task's inputs live, logits in fp32 whatever the precision of the forward that made them.
        self.replay_buffer = ReservoirBuffer(int(self.params["buffer_size"]), {"x": self.inputs_device})
        # The batch whose loss was just computed, waiting for its optimizer step before it is stored.
        self.pending: dict[str, torch.Tensor] | None = None

    def _draw(self, n: int) -> dict[str, torch.Tensor]:
        """A buffer batch without repeats, as the authors' buffer does."""
        return self.replay_buffer.sample(n, self.generator, replace=False)

    def replay_terms(self, n: int) -> torch.Tensor:
        """α · MSE(h(x′), z′); DER++ adds its label term."""
        drawn = self._draw(n)
        replayed = self.model(self.augment(self.on_compute(drawn["x"])))
        return self.params["der_alpha"] * F.mse_loss(replayed.float(), drawn["logits"])

    def loss(self, x, y, logits):
        # The batch as it was before augmentation is stored, as in the authors' code (``not_aug_inputs``).
        self.pending = {"x": self.batch_inputs(x).detach(), "y": y.detach(), "logits": logits.detach()}
        task_loss = F.cross_entropy(logits, y)
        if len(self.replay_buffer) == 0:
            return task_loss
        return task_loss + self.replay_terms(self.params.get("replay_batch_size") or len(y))

    def after_step(self) -> None:
        if self.pending is not None:
            self.replay_buffer.add(self.generator, **self.pending)
            self.pending = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "replay_buffer": self.replay_buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.replay_buffer.load_state_dict(state["replay_buffer"], self.device)


@register("derpp")
class DERpp(DER):
    PARAMS: dict[str, dict[str, Any]] = {
        "der_beta": {
            "description": ("β of Buzzega et al. 2020, weight of the cross-entropy on a second buffer batch (1.0: their"
                            " Seq-MNIST, buffer 200)"),
            "type": "number", "minimum": 0, "default": 1.0,
        },
    }

    def replay_terms(self, n: int) -> torch.Tensor:
        logit_term = super().replay_terms(n)
        drawn = self._draw(n)  # a second, independent draw (Algorithm 1)
        replayed = self.model(self.augment(self.on_compute(drawn["x"])))
        return logit_term + self.params["der_beta"] * F.cross_entropy(replayed, drawn["y"])
