"""iCaRL (Rebuffi et al. 2017, CVPR, "iCaRL: Incremental Classifier and Representation Learning").

Three parts, each one of the paper's algorithms:

* Exemplar memory of fixed total size K: after a task every class keeps m = ⌊K / #classes seen⌋
  exemplars. New classes are chosen by herding (Alg. 4) on L2-normalised features φ(x):
  with μ = mean_x φ(x) over the class,
      p_k = argmin_{x not chosen} ‖μ − (φ(x) + Σ_{j<k} φ(p_j)) / k‖,
  so the stored order is a priority order, and old classes are reduced by keeping
  their first m exemplars (Alg. 5).
* Training (Alg. 3) on the current data ∪ all exemplars with a sigmoid binary
  cross-entropy per class: one-hot targets δ_{y=c} for the classes of the current
  task, and for the earlier classes the sigmoid outputs q_c(x) of the old model
  (distillation). The old model is the model as loaded at the start of the task.
* Classification (Alg. 1) by nearest mean of exemplars: argmin_c ‖φ(x) − μ_c‖ with
  μ_c the (re-normalised) mean normalised feature of class c's exemplars, recomputed
  after every task because φ changes.

Defaults: ``memory_size`` K = 200. The paper's K = 2000 for CIFAR-100 leaves 20 exemplars
per class once all 100 classes are seen; 200 gives the same 20 per class on the 10-class
digits benchmarks and equals the replay buffer's default, so the two compare at equal memory.

Choices the paper leaves open (it only treats class-incremental streams):
* The loss sums the per-class binary cross-entropies (the paper's ℓ) over the classes seen
  so far and the current task's classes, and averages over the batch like every other
  method here; logits of classes not yet seen are left out (the paper's network has no
  output for them yet).
* "New" classes are those of the current task, "old" ones those seen before and absent
  from it. In class-incremental streams that is the paper's split; in domain-incremental
  ones (the same classes every task) there is then nothing to distil and iCaRL reduces to
  BCE with exemplar rehearsal and NME classification.
* Exemplar sets are kept per (task, class) group, as the replay buffer does; in
  class-incremental streams a group is a class, so m = K / #classes as in the paper.
  A class's NME mean pools all its groups.
* Herding picks without replacement, so a class's m exemplars are m distinct samples.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from clgrid.methods.base import Method, TaskData, register, stored, take
from clgrid.methods.parts.distillation import frozen_copy
from clgrid.methods.parts.ncm import nearest_mean_scores


def herding_order(features: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of the first ``m`` exemplars chosen by herding (Alg. 4), in order of choice.

    Works on L2-normalised ``features``; each step adds the sample that brings the running
    mean of the chosen ones closest to the class mean μ, without replacement. μ is the plain
    mean of the normalised features: the running mean of all n samples equals it exactly.
    Each step is a few ops over all candidates at once and stays on the device (chosen ones
    get +inf), with no transfer to Python until the end.
    """
    feats = F.normalize(features, dim=1)
    class_mean = feats.mean(0)
    n = len(feats)
    steps = min(m, n)
    chosen = torch.empty(steps, dtype=torch.long, device=feats.device)
    taken = torch.zeros(n, dtype=feats.dtype, device=feats.device)  # 0, or +inf once chosen
    running_sum = torch.zeros_like(class_mean)
    for k in range(1, steps + 1):
        distances = torch.linalg.vector_norm(class_mean - (running_sum + feats) / k, dim=1) + taken
        pick = torch.argmin(distances, keepdim=True)
        chosen[k - 1 : k] = pick
        taken.index_fill_(0, pick, float("inf"))
        running_sum = running_sum + feats.index_select(0, pick)[0]
    return chosen.to(features.device)


def icarl_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    new_classes: list[int],
    old_classes: list[int],
    old_logits: torch.Tensor | None,
) -> torch.Tensor:
    """Alg. 3's loss: Σ_c BCE(σ(z_c), target_c), mean over the batch.

    target_c = δ_{y=c} for ``new_classes`` and σ(z_old,c) for ``old_classes`` (lists, or index tensors on the
    logits' device), where ``old_logits`` holds the old model's logits for ``old_classes`` only (in that order).
    """
    device = logits.device
    columns, targets = [], []
    if len(old_classes):
        columns.append(torch.as_tensor(old_classes, device=device))
        targets.append(torch.sigmoid(old_logits))
    if len(new_classes):
        new = torch.as_tensor(new_classes, device=device)
        columns.append(new)
        targets.append((y.unsqueeze(1) == new.unsqueeze(0)).to(logits.dtype))
    columns, targets = torch.cat(columns), torch.cat(targets, dim=1)
    return F.binary_cross_entropy_with_logits(logits[:, columns], targets, reduction="sum") / len(y)


@register("icarl")
class ICaRL(Method):
    PARAMS: dict[str, dict[str, Any]] = {
        "memory_size": {
            "description": ("exemplars kept across all classes, K of Rebuffi et al. 2017 (2000 for CIFAR-100's 100 "
                            "classes, 20 per class; 200 gives the same 20 per class on 10 classes and equals replay's "
                            "buffer_size)"),
            "type": "integer", "minimum": 1, "default": 200,
        },
    }
    FACTS: dict[str, Any] = {"paper": "Rebuffi et al. 2017, CVPR", "buffer_params": ["memory_size"]}

    def __init__(self, model, params, n_classes, **context):
        super().__init__(model, params, n_classes, **context)
        self.memory_size = int(self.params["memory_size"])
        device = next(model.parameters()).device
        # Exemplars, grouped by (task, class) in sorted order, each group in herding order.
        self.exemplar_x: torch.Tensor | None = None
        self.exemplar_y = torch.empty(0, dtype=torch.long, device=device)
        self.exemplar_task = torch.empty(0, dtype=torch.long, device=device)
        self.old_model: torch.nn.Module | None = None
        self.new_classes: list[int] = []
        self.old_classes: list[int] = []
        # The same as index tensors on the model's device, built once per task rather than every step.
        self._new_columns = self._old_columns = torch.empty(0, dtype=torch.long, device=device)
        # How many leading rows of the training data are the task's own samples (the rest are exemplars).
        self._n_task_samples: int | None = None

    def training_data(self, task: TaskData, load_task: Callable[[int], TaskData]) -> TaskData:
        """The task's samples followed by all stored exemplars (Alg. 3's D = X ∪ P)."""
        self._n_task_samples = len(task.y)
        if self.exemplar_x is None or len(self.exemplar_y) == 0:
            return task
        return task.with_samples(torch.cat([task.x, self.exemplar_x]), torch.cat([task.y, self.exemplar_y]),
                                 task.classes)

    def before_task(self, task: TaskData, generator: torch.Generator) -> None:
        super().before_task(task, generator)
        self.new_classes = sorted(task.classes)
        self.old_classes = [c for c in self.seen_classes if c not in set(task.classes)]
        self.old_model = None
        if self.old_classes:
            self.old_model = frozen_copy(self.model)
        self._new_columns = torch.as_tensor(self.new_classes, dtype=torch.long, device=self.device)
        self._old_columns = torch.as_tensor(self.old_classes, dtype=torch.long, device=self.device)

    def loss(self, x, y, logits):
        old_logits = None
        if self.old_model is not None:
            with torch.no_grad():
                old_logits = self.old_model(x)[:, self._old_columns.to(x.device)]
        return icarl_loss(logits, y, self._new_columns, self._old_columns, old_logits)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) in fp32 (herding and the class means are computed from it, and kept)."""
        return stored(self.features_of(x))

    def after_task(self, task: TaskData) -> None:
        super().after_task(task)
        n_own = self._n_task_samples if self._n_task_samples is not None else len(task.y)
        self._n_task_samples = None
        self.old_model = None
        self.update_exemplars(task.task_id, task.x[:n_own], task.y[:n_own])
        self.update_exemplar_means()

    def update_exemplars(self, task_id: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Alg. 2's memory update: m = ⌊K / #groups⌋, reduce old sets (Alg. 5), herd new ones (Alg. 4)."""
        # Groups from torch.unique over whole tensors, not a Python set over every sample.
        pairs = torch.stack([self.exemplar_task, self.exemplar_y.to(self.exemplar_task.device)], 1)
        old_groups = [tuple(g) for g in torch.unique(pairs, dim=0).tolist()]
        new_groups = [(task_id, c) for c in y.unique().tolist()]
        groups = sorted(set(old_groups) | set(new_groups))
        per_group = self.memory_size // len(groups)
        if per_group < 1:
            raise ValueError(f"iCaRL memory_size = {self.memory_size} is smaller than the {len(groups)} classes seen "
                             f"so far: every class needs at least one exemplar; raise memory_size")
        keep_x, keep_y, keep_t = [], [], []
        for t, c in groups:
            if (t, c) in old_groups:
                members = torch.nonzero((self.exemplar_task == t) & (self.exemplar_y == c)).flatten()[:per_group]
                keep_x.append(take(self.exemplar_x, members))
            else:
                members = torch.nonzero(y == c).flatten()
                order = herding_order(self._features(take(x, members)), per_group)
                keep_x.append(take(x, members[order]))
            count = len(keep_x[-1])
            keep_y.append(torch.full((count,), c, dtype=torch.long, device=y.device))
            keep_t.append(torch.full((count,), t, dtype=torch.long, device=y.device))
        self.exemplar_x = torch.cat(keep_x)
        self.exemplar_y = torch.cat(keep_y)
        self.exemplar_task = torch.cat(keep_t)

    def update_exemplar_means(self) -> None:
        """μ_c = normalise(mean of normalised φ over class c's exemplars), with the current φ (Alg. 1)."""
        feats = F.normalize(self._features(self.exemplar_x), dim=1)
        self.class_means = {
            int(c): F.normalize(feats[self.exemplar_y == c].mean(0), dim=0) for c in self.exemplar_y.unique().tolist()
        }

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest mean of exemplars (Alg. 1): −‖φ(x)/‖φ(x)‖ − μ_c‖; −inf for classes without exemplars."""
        if not self.class_means:
            return self.model(x)
        return nearest_mean_scores(F.normalize(self.model.features(x).float(), dim=1), self.class_means,
                                   self.n_classes)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "exemplar_x": self.exemplar_x,
            "exemplar_y": self.exemplar_y,
            "exemplar_task": self.exemplar_task,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = self.device
        self.exemplar_x = self.to_inputs_device(state["exemplar_x"])  # with the task's inputs (host or device)
        self.exemplar_y = state["exemplar_y"].to(device)
        self.exemplar_task = state["exemplar_task"].to(device)
