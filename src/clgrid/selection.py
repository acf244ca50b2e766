"""Choosing hyperparameters on validation data: the selection jobs of a selection study (``clgrid.config.selection``)
and how a final run or a per-task candidate reads what was chosen.

Whole stream / first k tasks: every candidate's score is the mean over the selection seeds of a metric of its
*validation* accuracy matrix; the best score wins (the metric's own direction, ``clgrid.catalog.metrics``).
Per task (FACIL, Masana et al. 2022, §"hyperparameter selection"): for each task, the learning rate whose
fine-tuning (stability weight 0) reaches the highest accuracy on the new task's validation split (the plasticity);
then the stability weight halved from its start value until the new task's validation accuracy reaches
``fraction`` × that plasticity (the largest such weight; none: the smallest tried).

Ties (scores equal to 1e-9): the candidate listed first wins: the sweep's own order for whole stream and first k,
the learning rates' order for the plasticity, the largest weight for the stability. A NaN score (a diverged
candidate) never wins. A selection job refuses any metrics file not evaluated on validation data, so no test
number can reach a choice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from clgrid.io import file_sha256, read_json, write_json
from clgrid.spec import RunSpec

TIE = 1e-9


def best_index(scores: Sequence[float], higher_is_better: bool = True) -> int:
    """Index of the best score; ties (within 1e-9) go to the first listed, NaN never wins (all NaN: the first)."""
    best = None
    for i, score in enumerate(scores):
        if score is None or math.isnan(score):
            continue
        if best is None or (score > scores[best] + TIE if higher_is_better else score < scores[best] - TIE):
            best = i
    return 0 if best is None else best


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values and not any(math.isnan(v) for v in values) else math.nan


def select_from_metrics(spec: dict[str, Any], metrics_files: Sequence[str]) -> dict[str, Any]:
    """The selection record: every candidate's values, per-seed and mean validation score, and the chosen one.

    ``spec``: {base, protocol, metric, higher_is_better, candidates: [[run name, swept values], ...] in the
    sweep's order (the tie rule's order: a list, as the spec's JSON sorts a mapping's keys), seeds, k?}."""
    metric = spec["metric"]
    candidates = [(name, values) for name, values in spec["candidates"]]
    per_run: dict[str, dict[int, float]] = {name: {} for name, _ in candidates}
    for path in metrics_files:
        record = read_json(path)
        if record.get("evaluated_on") != "validation":
            raise ValueError(f"'{path}' was not evaluated on validation data (evaluated_on: "
                             f"{record.get('evaluated_on', 'test')}); a selection reads validation metrics only")
        if record["method"] not in per_run:
            raise ValueError(f"'{path}' is the run '{record['method']}', not a candidate of {spec['base']}")
        if metric not in record["metrics"]:
            raise ValueError(f"'{path}' has no metric '{metric}'; it has {sorted(record['metrics'])}")
        per_run[record["method"]][int(record["seed"])] = float(record["metrics"][metric])
    seeds = [int(s) for s in spec["seeds"]]
    rows = []
    for name, values in candidates:
        missing = [s for s in seeds if s not in per_run[name]]
        if missing:
            raise ValueError(f"candidate '{name}' lacks the metrics of seed(s) {missing}")
        scores = [per_run[name][s] for s in seeds]
        rows.append({"run": name, "values": values, "per_seed": dict(zip(map(str, seeds), scores)),
                     "score": _mean(scores)})
    chosen = best_index([r["score"] for r in rows], spec["higher_is_better"])
    return {"base": spec["base"], "protocol": spec["protocol"], "metric": metric,
            "higher_is_better": spec["higher_is_better"], "seeds": seeds, **({"k": spec["k"]} if "k" in spec else {}),
            "tie_rule": "the candidate listed first in the sweep wins a tie (scores within 1e-9); NaN never wins",
            "candidates": rows, "chosen": rows[chosen]["run"], "values": rows[chosen]["values"],
            "score": rows[chosen]["score"]}


def new_task_accuracy(eval_record: dict[str, Any], task: int, headline: str = "class_il") -> float:
    """A candidate's validation accuracy on the task it just learned (task-IL where that is the headline)."""
    row = eval_record["acc_task_il" if headline == "task_il" else "acc"]
    return float(row[task])


def facil_plasticity(accuracies: Sequence[float]) -> int:
    """Index of the learning rate with the best fine-tuning accuracy on the new task (ties: the first listed)."""
    return best_index(accuracies, True)


def facil_stability(weights: Sequence[float], accuracies: Sequence[float], plasticity: float,
                    fraction: float) -> int:
    """Index of the first weight (start, start/2, ...) whose new-task accuracy reaches ``fraction`` × plasticity;
    none does: the last (smallest). FACIL's loop, run as parallel candidates: halving stops at the first success."""
    threshold = fraction * plasticity
    for i, acc in enumerate(accuracies):
        if not math.isnan(acc) and acc >= threshold - TIE:
            return i
    return len(weights) - 1


def select_task(spec: dict[str, Any], evals: Sequence[str], out: str, plasticity_file: str | None = None) -> None:
    """One per-task selection: stage ``plasticity`` (``spec.lrs``) or ``stability`` (``spec.weights``), from the
    candidates' validation eval files of task ``spec.task`` in the spec's candidate order."""
    records = [read_json(p) for p in evals]
    for path, record in zip(evals, records):
        if record.get("evaluated_on") != "validation":
            raise ValueError(f"'{path}' was not evaluated on validation data; a selection reads validation only")
    task = int(spec["task"])
    accs = [new_task_accuracy(r, task, spec.get("headline", "class_il")) for r in records]
    result = {"base": spec["base"], "seed": spec["seed"], "task": task, "stage": spec["stage"],
              "candidates": [{"run": name, "state": state, "new_task_acc": acc}
                             for name, state, acc in zip(spec["candidates"], spec["states"], accs)]}
    if spec["stage"] == "plasticity":
        i = facil_plasticity(accs)
        result.update({"lr": spec["lrs"][i], "plasticity": accs[i], "chosen": spec["candidates"][i],
                       "tie_rule": "the learning rate listed first wins a tie"})
    else:
        plasticity = read_json(plasticity_file)
        i = facil_stability(spec["weights"], accs, plasticity["plasticity"], spec["fraction"])
        threshold = spec["fraction"] * plasticity["plasticity"]
        result.update({"lr": plasticity["lr"], "plasticity": plasticity["plasticity"], "fraction": spec["fraction"],
                       "threshold": threshold, spec["stability_key"]: spec["weights"][i],
                       "stability_key": spec["stability_key"], "chosen": spec["candidates"][i],
                       "state": spec["states"][i], "reached": accs[i] >= threshold - TIE,
                       "tie_rule": "halving stops at the first weight that reaches the threshold"})
    write_json(out, result)


def resolved(spec: RunSpec, task_id: int | None = None) -> RunSpec:
    """The spec a job trains with: a final run's with the chosen values merged in (and recorded, with the
    selection file's digest, in its ``selection``), a per-task stability candidate's with the chosen learning rate
    of its task; any other spec as it is."""
    selection = spec.selection or {}
    if selection.get("role") == "final" and selection.get("file"):
        chosen = read_json(selection["file"])
        values = chosen["values"]
        params = {**spec.params, **{k: v for k, v in values.items() if k in spec.params}}
        train = {**spec.train_settings, **{k: v for k, v in values.items() if k not in spec.params}}
        record = {**selection, "values": values, "chosen": chosen["chosen"], "file_sha256": file_sha256(selection["file"])}
        return dataclasses.replace(spec, method_params=params, train=train, selection=record)
    if selection.get("role") == "candidate" and selection.get("lr_from") and task_id is not None:
        path = selection["lr_from"].format(task=task_id)
        lr = read_json(path)["lr"]
        return dataclasses.replace(spec, train={**spec.train_settings, "lr": lr},
                                   selection={**selection, "lr": lr, "lr_file_sha256": file_sha256(path)})
    return spec
