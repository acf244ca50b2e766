"""Nearest-class-mean classification: scores from the distances of features to class means (Mensink et al. 2013;
iCaRL's classifier, Rebuffi et al. 2017), for the NCM head every method can use and for iCaRL."""

from __future__ import annotations

import torch


def nearest_mean_scores(features: torch.Tensor, means: dict[int, torch.Tensor], n_classes: int) -> torch.Tensor:
    """Scores for nearest-class-mean classification: −‖f − μ_c‖ per class, −inf for classes without a mean."""
    scores = torch.full((len(features), n_classes), float("-inf"), device=features.device)
    classes = sorted(means)
    centres = torch.stack([means[c] for c in classes])
    scores[:, classes] = -torch.cdist(features.float(), centres.float())  # fp32 whatever the forward's autocast
    return scores


@torch.no_grad()
def fold_class_means(means: dict[int, torch.Tensor], counts: dict[int, int], features: torch.Tensor,
                     y: torch.Tensor) -> None:
    """Fold the ``features`` of each class in ``y`` into its mean in ``means`` (in place; ``counts``: the samples
    behind each mean).

    A class seen in an earlier task (domain-incremental streams) keeps one prototype, the mean over all its samples
    so far, rather than the latest task's: the stored part is not recomputed, as the old samples are gone.
    """
    for c in y.unique().tolist():
        members = features[y == c]
        n_old = counts.get(int(c), 0)
        old_sum = means[int(c)] * n_old if n_old else 0.0
        counts[int(c)] = n_old + len(members)
        means[int(c)] = (old_sum + members.sum(0)) / counts[int(c)]
