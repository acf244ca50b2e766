"""A run's ``metrics.json``: its accuracy matrices (class-IL, task-IL, top-5, held-out classes, extra sets,
retrieval) assembled from the evaluation rows of its tasks, and every metric ``clgrid.metrics`` computes from them.

Pure Python over the rows the train jobs wrote: the metrics job never imports torch.
"""

from __future__ import annotations

import logging
from typing import Any

from clgrid import metrics
from clgrid.io import provenance
from clgrid.spec import RunSpec

log = logging.getLogger("clgrid")


def run_record(spec: RunSpec, init: dict[str, Any], rows: list[dict[str, Any]],
               checkpoint_sha256: list[str]) -> dict[str, Any]:
    """The content of a run's ``metrics.json``: ``init`` is the initial model's evaluation (the FWT baseline),
    ``rows`` the evaluation after each task in task order, ``checkpoint_sha256`` the digests of the task states."""
    acc_matrix = [row["acc"] for row in rows]
    if spec.evaluate_on == "validation":
        init = _validation_init(spec, init, rows)
    elif any(row.get("evaluated_on") == "validation" for row in rows):
        raise ValueError(f"{spec.run_id} is evaluated on the test sets, but some of its task evaluations were on "
                         "validation data (evaluate_on: validation): rerun its training jobs")
    result = {
        **spec.identity(),
        "acc_matrix": acc_matrix,
        "init_acc": init["acc"],
        "acc_seen": metrics.accuracy_seen(acc_matrix).tolist(),
        "metrics": metrics.all_metrics(acc_matrix, init["acc"]),
    }
    if spec.evaluate_on == "validation":
        result["evaluated_on"] = "validation"
    diverged = next((row["diverged"] for row in rows if "diverged" in row), None)
    if diverged:
        # Its rows from that task on are NaN, and so is every metric that reads them; tables say "diverged".
        result["diverged"] = True
        result["diverged_at"] = diverged
        log.warning("%s diverged at task %d (step %d, loss %s)", result["run"], diverged["task"], diverged["step"],
                    diverged["loss"])
    _add_task_il(result, spec.benchmark_cfg, init, rows)
    _add_top5_and_mtil(result, spec.benchmark_cfg, rows)
    _add_unseen_and_retrieval(result, rows)
    _add_validation(result, rows)
    for key in sorted(k for k in rows[-1] if k.startswith("acc_") and k != "acc_task_il" and not k.endswith("_task_il")):
        result[f"acc_matrix_{key[4:]}"] = [row[key] for row in rows]
        result["metrics"][key] = metrics.average_accuracy(result[f"acc_matrix_{key[4:]}"])
    _add_selection(result, spec, rows)
    result["checkpoint_sha256"] = list(checkpoint_sha256)
    result["provenance"] = provenance(spec.to_json(), spec.seed, rows[-1]["provenance"]["device"])
    return result


def _validation_init(spec: RunSpec, init: dict[str, Any], rows: list[dict]) -> dict[str, Any]:
    """The initial model's accuracy on the validation splits (the FWT baseline of a run evaluated on them): the
    initial evaluation itself when it was evaluated on validation data, else its ``validation`` row."""
    test_rows = [row["after_task"] for row in rows if row.get("evaluated_on") != "validation"]
    if test_rows:
        raise ValueError(f"{spec.run_id} is evaluated on validation data, but the evaluations after tasks "
                         f"{test_rows} were on the test sets: rerun its training jobs")
    if init.get("evaluated_on") == "validation":
        return init
    if "validation" not in init:
        raise ValueError(f"{spec.run_id} is evaluated on validation data, but its initial evaluation holds no "
                         "validation row: its benchmark sets no validation split aside (add validation: {fraction: "
                         f"0.1}} to benchmarks.{spec.benchmark}), or the evaluation predates it")
    return init["validation"]


def _add_validation(result: dict[str, Any], rows: list[dict]) -> None:
    """On a benchmark with validation splits, the accuracy matrices on them (class-IL and task-IL; equal on
    domain-incremental scenarios) and their final average accuracy, beside the test matrices."""
    if not all("validation" in row for row in rows):
        return
    acc_matrix = [row["validation"]["acc"] for row in rows]
    task_il = [row["validation"]["acc_task_il"] for row in rows]
    result["validation"] = {"acc_matrix": acc_matrix, "acc_task_il_matrix": task_il,
                            "acc": metrics.average_accuracy(acc_matrix),
                            "acc_task_il": metrics.average_accuracy(task_il)}


def _add_task_il(result: dict[str, Any], bench: dict[str, Any], init: dict[str, Any], rows: list[dict]) -> None:
    """Task-IL matrix and metrics, where tasks hold different classes (elsewhere task-IL equals class-IL)."""
    disjoint_tasks = bench["scenario"] in ("class_incremental", "task_incremental") or (
        bench["scenario"] == "dataset_sequence" and bench.get("label_space", "disjoint") == "disjoint")
    if all("acc_task_il" in row for row in rows) and disjoint_tasks:
        task_il = [row["acc_task_il"] for row in rows]
        result["acc_matrix_task_il"] = task_il
        result["metrics"].update({f"{k}_task_il": v for k, v in metrics.all_metrics(task_il, init["acc_task_il"]).items()
                                  if k != "fwt"})


def _add_top5_and_mtil(result: dict[str, Any], bench: dict[str, Any], rows: list[dict]) -> None:
    if all("top5" in row for row in rows):
        result["acc_matrix_top5"] = [row["top5"] for row in rows]
    if all("top5_task_il" in row for row in rows):
        result["acc_matrix_top5_task_il"] = [row["top5_task_il"] for row in rows]
    if bench["scenario"] == "dataset_sequence":
        # A dataset sequence is the MTIL protocol: each task a dataset, evaluated zero-shot before it is learned;
        # the ZSCL paper reports top-1 and top-5, each dataset scored among its own classes (its class names are
        # the whole zero-shot head): the task-IL matrices, where the datasets keep their own labels.
        top1 = result.get("acc_matrix_task_il", result["acc_matrix"])
        result["metrics"].update(metrics.mtil_metrics(top1))
        top5 = result.get("acc_matrix_top5_task_il", result.get("acc_matrix_top5"))
        if top5 is not None:
            result["metrics"].update({f"{k}_top5": v for k, v in metrics.mtil_metrics(top5).items()})


def _add_unseen_and_retrieval(result: dict[str, Any], rows: list[dict]) -> None:
    if all("unseen_acc" in row for row in rows):
        result["unseen_acc"] = [row["unseen_acc"] for row in rows]
        result["metrics"]["unseen_acc"] = result["unseen_acc"][-1]
        result["metrics"]["unseen_drop"] = result["metrics"]["acc"] - result["unseen_acc"][-1]
    if all("retrieval" in row for row in rows):
        result["retrieval"] = [row["retrieval"] for row in rows]
        final = rows[-1]["retrieval"]
        for group in ("seen", "unseen"):
            for name, value in final.get(group, {}).items():
                result["metrics"][f"{name}_{group}"] = value
        if "p_at_1_drop" in final:
            result["metrics"]["p_at_1_drop"] = final["p_at_1_drop"]


def _add_selection(result: dict[str, Any], spec: RunSpec, rows: list[dict]) -> None:
    """A selection study's run (a candidate's ``evaluated_on`` is set with its matrix): a final run's record names
    the chosen values, and after a first-k selection its ACC over the tasks the selection never saw."""
    selection = spec.selection or {}
    if not selection:
        return
    result["selection"] = dict(selection)
    if selection.get("role") == "final" and selection.get("k") is not None:
        k = int(selection["k"])
        result["metrics"]["acc_after_k"] = metrics.accuracy_after_k(result["acc_matrix"], k)
        if "acc_matrix_task_il" in result:
            result["metrics"]["acc_after_k_task_il"] = metrics.accuracy_after_k(result["acc_matrix_task_il"], k)
    per_task = [row["selected"] for row in rows if "selected" in row]
    if per_task:
        result["selection"]["per_task"] = per_task
