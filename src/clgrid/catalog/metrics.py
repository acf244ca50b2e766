"""Every metric clgrid reports, once: its name in ``metrics.json`` and the tables, its label, which direction is
better, its unit, what it means, which runs have it, and the code that computes it.

Pure Python (no numpy, no torch): the metric functions (``clgrid.metrics``), the run's metric record, the tables
and the figures read names, labels and directions from here. The order is the tables' column order; metrics a
run's evaluation adds per extra test set (``acc_<setname>``) follow, sorted. Definitions and sources are in the
functions' docstrings and in ``shared/notes/definitions.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

POINTS = "points"
"""Percentage points: accuracies (and NMI) in [0, 100], differences of them in [-100, 100]."""

TASK_IL = "_task_il"
TOP5 = "_top5"


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool
    definition: str
    applies_to: str
    """Which runs have it: every run, task-IL (disjoint classes per task), MTIL (dataset sequences), ..."""
    computed_by: str
    """The function (``clgrid.metrics`` unless named in full) or the evaluation record it comes from."""
    group: str
    """What assembles it: ``run`` (``metrics.all_metrics``), ``mtil`` (``metrics.mtil_metrics``), or a variant or
    record (``task_il``, ``top5``, ``unseen``, ``retrieval``) the run's metric record adds."""
    unit: str = POINTS
    needs_init_acc: bool = False
    """Whether its function also reads the initial model's accuracy per task (FWT's b_i)."""


def _task_il(metric: Metric) -> Metric:
    """The same metric on the task-IL accuracy matrix (each task's classes only)."""
    return Metric(metric.name + TASK_IL, f"{metric.label} (task-IL)", metric.higher_is_better,
                  metric.definition + ", with predictions restricted to the task's own classes",
                  "task-IL: benchmarks whose tasks hold different classes", metric.computed_by, "task_il", metric.unit,
                  metric.needs_init_acc)


def _top5(metric: Metric) -> Metric:
    """The same MTIL metric on top-5 accuracy (the ZSCL paper reports both)."""
    return Metric(metric.name + TOP5, f"{metric.label} (top-5)", metric.higher_is_better,
                  metric.definition + ", on top-5 accuracy", metric.applies_to + " with top-5 evaluated",
                  metric.computed_by, "top5", metric.unit)


ACC = Metric("acc", "ACC", True, "mean over tasks of the final accuracy (Lopez-Paz & Ranzato 2017)", "every run",
             "average_accuracy", "run")
AVG_INC_ACC = Metric("avg_inc_acc", "Avg. inc. ACC", True, "mean over t of the accuracy on the tasks seen after "
                     "task t (Rebuffi et al. 2017, iCaRL)", "every run", "average_incremental_accuracy", "run")
FORGETTING = Metric("forgetting", "Forgetting", False, "mean over tasks but the last of the best accuracy before "
                    "the last task minus the final one (Chaudhry et al. 2018)", "every run", "average_forgetting",
                    "run")
BWT = Metric("bwt", "BWT", True, "mean over tasks but the last of the final accuracy minus the accuracy just after "
             "learning it; negative means forgetting (Lopez-Paz & Ranzato 2017)", "every run", "backward_transfer",
             "run")
FWT = Metric("fwt", "FWT", True, "mean over tasks after the first of the accuracy before learning it minus the "
             "initial model's (Lopez-Paz & Ranzato 2017)", "every run", "forward_transfer", "run", needs_init_acc=True)
MTIL_TRANSFER = Metric("mtil_transfer", "Transfer", True, "zero-shot accuracy a dataset keeps while the datasets "
                       "before it are learned, each dataset among its own classes (Zheng et al. 2023, ZSCL)", "MTIL: dataset sequences", "mtil_transfer",
                       "mtil")
MTIL_AVG = Metric("mtil_avg", "Avg", True, "mean accuracy of every dataset after every task (ZSCL)",
                  "MTIL: dataset sequences", "mtil_avg", "mtil")
MTIL_LAST = Metric("mtil_last", "Last", True, "mean final accuracy over datasets, the same number as ACC (ZSCL)",
                   "MTIL: dataset sequences", "mtil_last", "mtil")


ACC_AFTER_K = Metric("acc_after_k", "ACC after k", True, "mean final accuracy over the tasks after the first k, "
                     "those a first-k selection never saw (Chaudhry et al. 2019)", "final runs of a first-k selection",
                     "accuracy_after_k", "selection")


def _retrieval(name: str, label: str, higher: bool, definition: str) -> Metric:
    return Metric(name, label, higher, definition, "runs evaluated by retrieval (dml, or retrieval eval sets)",
                  "clgrid.evaluate (the last task's record)", "retrieval")


METRICS: dict[str, Metric] = {m.name: m for m in [
    ACC, _task_il(ACC), AVG_INC_ACC, _task_il(AVG_INC_ACC), FORGETTING, _task_il(FORGETTING), BWT, _task_il(BWT), FWT,
    ACC_AFTER_K, _task_il(ACC_AFTER_K),
    MTIL_TRANSFER, MTIL_AVG, MTIL_LAST, _top5(MTIL_TRANSFER), _top5(MTIL_AVG), _top5(MTIL_LAST),
    Metric("unseen_acc", "Unseen ACC", True, "final accuracy on the held-out classes, never trained on",
           "benchmarks with holdout_classes", "the evaluation record (unseen_acc)", "unseen"),
    Metric("unseen_drop", "Unseen drop", False, "ACC minus Unseen ACC", "benchmarks with holdout_classes",
           "the run's metric record", "unseen"),
    _retrieval("p_at_1_seen", "P@1 seen", True, "precision@1 of k-NN retrieval on the trained classes"),
    _retrieval("p_at_1_unseen", "P@1 unseen", True, "precision@1 on held-out classes added to the index untrained"),
    _retrieval("p_at_1_drop", "P@1 drop", False, "P@1 seen minus P@1 unseen"),
    _retrieval("recall_at_8_seen", "R@8 seen", True, "share of queries with a same-class reference among their 8 "
               "nearest (clgrid.metrics.recall_at_k)"),
    _retrieval("map_at_r_seen", "MAP@R seen", True, "mean average precision at R (Musgrave et al. 2020)"),
    _retrieval("map_at_r_unseen", "MAP@R unseen", True, "MAP@R on held-out classes"),
    _retrieval("nmi_seen", "NMI seen", True, "normalised mutual information of a k-means clustering, x 100"),
    _retrieval("nmi_unseen", "NMI unseen", True, "NMI on held-out classes"),
]}
"""Every metric by name, in the tables' column order."""

EXTRA_SET_PREFIX = "acc_"
"""``acc_<setname>``: final ACC on an evaluation-only test set (``eval_sets``); higher is better."""


def in_group(group: str) -> list[Metric]:
    """The metrics one assembly step computes, in table order (``run``: ``metrics.all_metrics``)."""
    return [m for m in METRICS.values() if m.group == group]


def has_task_il(name: str) -> bool:
    """Whether a metric is also reported on the task-IL matrix (and so labelled class-IL beside it)."""
    return name + TASK_IL in METRICS


def is_extra_set(name: str) -> bool:
    """``acc_<setname>`` for an evaluation-only test set (not a catalogued metric)."""
    return name.startswith(EXTRA_SET_PREFIX) and len(name) > len(EXTRA_SET_PREFIX) and name not in METRICS


def higher_is_better(name: str) -> bool:
    """Which direction is better (an ``acc_<setname>`` or an unknown key: higher)."""
    metric = METRICS.get(name)
    return metric.higher_is_better if metric else True
