"""Accuracy of a model on every task's test set: one row of each accuracy matrix, and the evaluation record a
job writes after each task (every accuracy row, the held-out classes, extra sets, retrieval)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Callable

import torch

from clgrid.io import provenance

if TYPE_CHECKING:
    from clgrid.context import JobContext
    from clgrid.spec import RunSpec
    from clgrid.device import Precision

log = logging.getLogger("clgrid")

EVAL_BATCH = 1024
"""Test samples per forward pass: no gradients are kept, so batches far above the training batch size fit."""


@torch.inference_mode()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             classes: list[int] | None = None, batch: int = EVAL_BATCH, top5: list[float] | None = None,
             precision: Precision | None = None, top5_task: list[float] | None = None) -> tuple[float, float]:
    """(class-IL, task-IL) top-1 accuracy in percent; class-IL top-5 accuracy is appended to ``top5`` when given
    (the label among the 5 highest scores over every class, as ImageNet reports it), and task-IL top-5 (among the
    evaluated task's classes: a dataset's own, as the MTIL table reports it) to ``top5_task`` when given.

    Class-IL: argmax over every class of the head. Task-IL: argmax over ``classes`` only (the evaluated task's
    classes; the other logits are masked to −inf, as Mammoth's ``mask_classes`` does), so the task identity is
    given at test time. ``precision`` (the job's ``clgrid.device.Precision``): the forward runs under its autocast
    (bf16 or fp16 on a GPU, none on the CPU). The counts stay on the device until the end: one wait for the GPU
    per test set, not three per batch.
    """
    correct = correct_task = correct_top5 = correct_top5_task = 0
    mask = None
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    for start in range(0, len(y), batch):
        with autocast():
            scores = predict(x[start : start + batch])
        labels = y[start : start + batch]
        correct = correct + (scores.argmax(dim=-1) == labels).sum()
        best5 = scores.topk(min(5, scores.shape[-1]), dim=-1).indices
        correct_top5 = correct_top5 + (best5 == labels[:, None]).any(dim=-1).sum()
        if classes is not None:
            if mask is None:
                mask = torch.full((scores.shape[-1],), float("-inf"), device=scores.device)
                mask[torch.as_tensor(classes, device=scores.device)] = 0.0
            correct_task = correct_task + ((scores + mask).argmax(dim=-1) == labels).sum()
            if top5_task is not None:
                best5_task = (scores + mask).topk(min(5, len(classes)), dim=-1).indices
                correct_top5_task = correct_top5_task + (best5_task == labels[:, None]).any(dim=-1).sum()
    correct, correct_task, correct_top5 = int(correct), int(correct_task), int(correct_top5)
    n = max(len(y), 1)
    if top5 is not None:
        top5.append(100.0 * correct_top5 / n)
    if top5_task is not None:
        top5_task.append(100.0 * int(correct_top5_task) / n)
    return 100.0 * correct / n, (100.0 * correct_task / n if classes is not None else 100.0 * correct / n)


def accuracy_row(predict: Callable[[torch.Tensor], torch.Tensor],
                 test_sets: list[tuple[torch.Tensor, torch.Tensor, list[int]]],
                 precision: Precision | None = None, task_top5: bool = False) -> dict[str, list[float]]:
    """R[t, i] for every task i (seen or not), class-IL and task-IL (top-1) and class-IL top-5, given the predictor
    after task t (run under ``precision``'s autocast, see ``accuracy``); ``task_top5``: task-IL top-5 too."""
    top5: list[float] = []
    top5_task: list[float] | None = [] if task_top5 else None
    rows = [accuracy(predict, x, y, classes, top5=top5, precision=precision, top5_task=top5_task)
            for x, y, classes in test_sets]
    row = {"class_il": [r[0] for r in rows], "task_il": [r[1] for r in rows], "top5": top5}
    if top5_task is not None:
        row["top5_task_il"] = top5_task
    return row


def curve_point(ctx: JobContext, predict: Callable[[torch.Tensor], torch.Tensor], step: int) -> dict[str, Any]:
    """One point of a task's evaluation curve (``train.eval_every_iters``): after ``step`` optimizer steps of the
    task, class-IL and task-IL top-1 and class-IL top-5 on every task's test set (the keys of the record's row)."""
    row = accuracy_row(predict, ctx.test_sets()["tasks"], ctx.precision)
    log.info("step %d: accuracy per task %s", step, " ".join(f"{a:.1f}" for a in row["class_il"]))
    return {"step": step, "acc": row["class_il"], "acc_task_il": row["task_il"], "top5": row["top5"]}


RECALL_KS = (1, 2, 4, 8)


def retrieval_metrics(query, query_labels, reference, reference_labels, ks=RECALL_KS) -> dict[str, float]:
    """Retrieval quality of embeddings, in percent: precision@1, recall@k, MAP@R (pytorch-metric-learning's
    ``AccuracyCalculator``; Musgrave et al. 2020) and NMI of a k-means clustering of the queries (as many clusters
    as query classes). Queries and references are separate sets (test against training embeddings); euclidean
    distance, so pass L2-normalised vectors for cosine retrieval."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from clgrid.analysis.knn import IndexSpec, build_index, search
    from clgrid.metrics import recall_at_k

    query, reference = query.float().cpu(), reference.float().cpu()
    query_labels, reference_labels = query_labels.cpu(), reference_labels.cpu()
    spec = IndexSpec()
    _, ids = search(build_index(reference, spec), query, max(ks), spec)
    neighbour_labels = reference_labels.numpy()[ids]
    calculator = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "NMI"),
                                    k="max_bin_count", device=torch.device("cpu"))
    scores = calculator.get_accuracy(query, query_labels, reference, reference_labels, ref_includes_query=False)
    result = {"p_at_1": 100.0 * float(scores["precision_at_1"]),
              "map_at_r": 100.0 * float(scores["mean_average_precision_at_r"]),
              "nmi": 100.0 * float(scores["NMI"])}
    # Fewer references than k: every reference is among the k nearest.
    result.update({f"recall_at_{k}": recall_at_k(neighbour_labels, query_labels.numpy(), min(k, ids.shape[1]))
                   for k in ks})
    return result


def retrieval_record(ctx: JobContext, embed, task_id: int) -> dict[str, Any]:
    """Retrieval after task ``task_id`` (precision@1, recall@k, MAP@R, NMI): the seen classes' test embeddings
    against their training embeddings and, with held-out classes, the unseen test embeddings against the seen and
    unseen training embeddings (the unseen classes added to the index without training). Every reference is
    embedded by the current model, so any method's features (a classifier's backbone) can be compared."""
    def embedded(parts):
        return torch.cat([embed(x).cpu() for x, _ in parts]), torch.cat([y.cpu() for _, y in parts])

    seen_train = [(d.x, d.y) for d in (ctx.task_data(i, "train") for i in range(task_id + 1))]
    seen_test = [(x, y) for x, y, _ in ctx.test_sets()["tasks"][: task_id + 1]]
    reference, reference_labels = embedded(seen_train)
    query, query_labels = embedded(seen_test)
    record = {"seen": retrieval_metrics(query, query_labels, reference, reference_labels)}
    if "unseen" in ctx.test_sets():
        unseen_ref, unseen_ref_labels = embedded([ctx.unseen_train()])
        unseen_query, unseen_labels = embedded([ctx.test_sets()["unseen"][0][:2]])
        record["unseen"] = retrieval_metrics(unseen_query, unseen_labels, torch.cat([reference, unseen_ref]),
                                             torch.cat([reference_labels, unseen_ref_labels]))
        record["p_at_1_drop"] = record["seen"]["p_at_1"] - record["unseen"]["p_at_1"]
    return record


def is_mtil(bench: dict[str, Any]) -> bool:
    """A dataset sequence whose datasets keep their own labels: the MTIL protocol (Zheng et al. 2023), scored per
    dataset among its own classes."""
    return bench["scenario"] == "dataset_sequence" and bench.get("label_space", "disjoint") == "disjoint"


def validation_row(predict, ctx: JobContext) -> dict[str, list[float]]:
    """Class-IL and task-IL accuracy on each task's validation split: an eval record's ``validation`` entry."""
    row = accuracy_row(predict, ctx.validation_sets(), ctx.precision)
    return {"acc": row["class_il"], "acc_task_il": row["task_il"]}


def eval_record(spec: RunSpec, ctx: JobContext, predict, task_id: int, method=None) -> dict[str, Any]:
    """Row ``task_id`` of every accuracy matrix: class-IL and task-IL on each task, unseen classes, extra sets;
    with a metric-learning method or ``retrieval: true``, the retrieval metrics too. On a benchmark with validation
    splits, ``validation`` holds the row on them too; a job evaluated on validation data (``evaluate_on:
    validation``) records ``evaluated_on: validation``, and every row is then on the validation splits."""
    sets = ctx.test_sets()
    # MTIL (a dataset sequence with its own labels per dataset) scores each dataset among its own classes, top-1
    # and top-5: the task-IL top-5 is recorded for it (and only for it, so other records keep their bytes).
    within_dataset = is_mtil(spec.benchmark_cfg)
    tasks = accuracy_row(predict, sets["tasks"], ctx.precision, task_top5=within_dataset)
    record = {"after_task": task_id, "acc": tasks["class_il"], "acc_task_il": tasks["task_il"],
              "top5": tasks["top5"]}
    if within_dataset:
        record["top5_task_il"] = tasks["top5_task_il"]
    if ctx.evaluate_on == "validation":
        record["evaluated_on"] = "validation"  # every row above is on the tasks' validation splits
    elif ctx.has_validation:
        record["validation"] = validation_row(predict, ctx)
    if "unseen" in sets:
        record["unseen_acc"] = accuracy_row(predict, sets["unseen"], ctx.precision)["class_il"][0]
    for key, parts in sets.items():
        if key.startswith("set:"):
            row = accuracy_row(predict, parts, ctx.precision)
            record[f"acc_{key[4:]}"] = row["class_il"]
            record[f"acc_{key[4:]}_task_il"] = row["task_il"]
    log.info("after task %d: accuracy per task %s (task-IL %s)%s", task_id,
             " ".join(f"{a:.1f}" for a in record["acc"]), " ".join(f"{a:.1f}" for a in record["acc_task_il"]),
             f", unseen classes {record['unseen_acc']:.1f}" if "unseen_acc" in record else "")
    if method is not None and (getattr(method, "retrieval", False) or spec.benchmark_cfg.get("retrieval")):
        record["retrieval"] = retrieval_record(ctx, method.embed, task_id)
        index = method.approximate_index() if hasattr(method, "approximate_index") else None
        if index is not None:  # an approximate index: its recall against exact search
            queries = torch.cat([method.embed(x).cpu() for x, _, _ in ctx.test_sets()["tasks"][: task_id + 1]])
            record["retrieval"]["index_recall_at_10_vs_exact"] = index.recall_vs_exact(queries, 10)
        seen, unseen = record["retrieval"]["seen"], record["retrieval"].get("unseen")
        log.info("after task %d: retrieval precision@1 %.1f on seen classes%s", task_id, seen["p_at_1"],
                 f", {unseen['p_at_1']:.1f} on unseen classes" if unseen else "")
    record["provenance"] = provenance(spec.to_json(), spec.seed, str(ctx.device))
    return record
