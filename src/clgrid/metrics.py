"""CL metrics as pure functions of the accuracy matrix.

``acc_matrix[t, i]`` is the test accuracy (percent) on task i after training
task t, for every i including tasks not yet trained (t, i = 0..T-1 here; the
papers count from 1). ``init_acc[i]`` is the accuracy of the initial model on
task i (the b_i of Lopez-Paz & Ranzato 2017). Definitions and sources are in
each docstring and in ``shared/notes/definitions.md``. Names, directions and labels are those of
``clgrid.catalog.metrics``, which says which function computes each metric.
"""

from __future__ import annotations

import numpy as np

from clgrid.catalog import metrics as catalog


def _square(acc_matrix) -> np.ndarray:
    r = np.asarray(acc_matrix, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1]:
        raise ValueError(f"acc_matrix must be T×T (row t: after task t, column i: task i), got shape {r.shape}")
    return r


def average_accuracy(acc_matrix) -> float:
    """ACC (Lopez-Paz & Ranzato 2017, GEM): mean over tasks of the final accuracy, mean_i R[T, i]."""
    r = _square(acc_matrix)
    return float(r[-1].mean())


def accuracy_after_k(acc_matrix, k: int) -> float:
    """Final accuracy averaged over the tasks after the first k, mean_{i≥k} R[T, i]: what a first-k selection
    (Chaudhry et al. 2019, A-GEM §5) reports, on tasks its hyperparameters were not chosen on."""
    r = _square(acc_matrix)
    if not 0 < k < len(r):
        raise ValueError(f"k={k} leaves no task after the first k of {len(r)}")
    return float(r[-1, k:].mean())


def accuracy_seen(acc_matrix) -> np.ndarray:
    """A_t = mean_{i≤t} R[t, i]: accuracy on the tasks seen so far, after each task t (equal-size tasks)."""
    r = _square(acc_matrix)
    return np.array([r[t, : t + 1].mean() for t in range(len(r))])


def average_incremental_accuracy(acc_matrix) -> float:
    """Average incremental accuracy (Rebuffi et al. 2017, iCaRL): mean over t of A_t."""
    return float(accuracy_seen(acc_matrix).mean())


def forgetting_per_task(acc_matrix) -> np.ndarray:
    """f_i = max_{l<T} R[l, i] − R[T, i] for each i < T (Chaudhry et al. 2018, RWalk, eq. 3)."""
    r = _square(acc_matrix)
    last = len(r) - 1
    return np.array([r[:last, i].max() - r[last, i] for i in range(last)])


def average_forgetting(acc_matrix) -> float:
    """Average forgetting F = mean_{i<T} f_i (Chaudhry et al. 2018, eq. 3-4); 0 for a single task.

    The max runs over every row before the last, as in the paper. Avalanche
    uses R[i, i] − R[T, i] instead (that is −BWT per task) and Mammoth a max over
    all rows; numbers from those frameworks are not directly comparable.
    """
    f = forgetting_per_task(acc_matrix)
    return float(f.mean()) if len(f) else 0.0


def backward_transfer(acc_matrix) -> float:
    """BWT (Lopez-Paz & Ranzato 2017): mean_{i<T} (R[T, i] − R[i, i]); negative means forgetting."""
    r = _square(acc_matrix)
    last = len(r) - 1
    if last == 0:
        return 0.0
    return float(np.mean([r[last, i] - r[i, i] for i in range(last)]))


def forward_transfer(acc_matrix, init_acc) -> float:
    """FWT (Lopez-Paz & Ranzato 2017): mean_{i≥2} (R[i−1, i] − b_i), b_i the initial model's accuracy on task i."""
    r = _square(acc_matrix)
    b = np.asarray(init_acc, dtype=np.float64)
    if b.shape != (len(r),):
        raise ValueError(f"init_acc must have one entry per task ({len(r)}), got shape {b.shape}")
    if len(r) == 1:
        return 0.0
    return float(np.mean([r[i - 1, i] - b[i] for i in range(1, len(r))]))


def mtil_transfer(acc_matrix) -> float:
    """MTIL Transfer (Zheng et al. 2023, ZSCL): mean_{i≥2} mean_{t<i} R[t, i], the strict upper triangle averaged
    per dataset first: zero-shot accuracy a dataset keeps while the model learns the datasets before it."""
    r = _square(acc_matrix)
    if len(r) == 1:
        return 0.0
    return float(np.mean([r[:i, i].mean() for i in range(1, len(r))]))


def mtil_avg(acc_matrix) -> float:
    """MTIL Avg (ZSCL): mean_i mean_t R[t, i], every evaluation of every dataset after every task."""
    return float(_square(acc_matrix).mean())


def mtil_last(acc_matrix) -> float:
    """MTIL Last (ZSCL): mean_i R[T, i], the final row (the same number as ACC)."""
    return average_accuracy(acc_matrix)


def _computed(group: str, acc_matrix, init_acc=None) -> dict[str, float]:
    """The catalog's metrics of ``group``, each by the function of this module it names."""
    functions = globals()
    return {metric.name: functions[metric.computed_by](acc_matrix, *([init_acc] if metric.needs_init_acc else []))
            for metric in catalog.in_group(group)}


def mtil_metrics(acc_matrix) -> dict[str, float]:
    """Transfer, Avg and Last as the ZSCL paper's MTIL table reports them."""
    return _computed("mtil", acc_matrix)


def all_metrics(acc_matrix, init_acc) -> dict[str, float]:
    """Every scalar metric of one run (ACC, Avg. inc. ACC, Forgetting, BWT, FWT), keyed by the names used in tables."""
    return _computed("run", acc_matrix, init_acc)


def recall_at_k(neighbour_labels, query_labels, k: int) -> float:
    """Recall@k of retrieval (Oh Song et al. 2016; Musgrave et al. 2020): the percentage of queries with at least
    one reference of their own class among their k nearest references. ``neighbour_labels[q]`` lists the labels
    of query q's nearest references, nearest first (at least k of them)."""
    labels = np.asarray(neighbour_labels)
    if labels.ndim != 2 or labels.shape[1] < k:
        raise ValueError(f"recall@{k} needs the labels of at least {k} neighbours per query, got shape {labels.shape}")
    hits = (labels[:, :k] == np.asarray(query_labels)[:, None]).any(axis=1)
    return float(100.0 * hits.mean()) if len(hits) else 0.0
