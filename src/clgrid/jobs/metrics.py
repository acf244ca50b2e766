"""The metrics job: a run's accuracy matrices and CL metrics from its tasks' evaluations (no torch)."""

from __future__ import annotations

import logging
from typing import Any

from clgrid.io import read_json, write_json
from clgrid.storage import checkpoint_digest
from clgrid.spec import RunSpec

log = logging.getLogger("clgrid")


def run_metrics(spec: RunSpec | dict[str, Any], init_eval: str, task_evals: list[str], out: str,
                task_states: list[str] = ()) -> None:
    """The accuracy matrix of a run and every metric computed from it, with the checksums of its checkpoints."""
    from clgrid.run_metrics import run_record

    from clgrid.selection import resolved

    spec = resolved(RunSpec.of(spec))  # a selected run's record names the values chosen for it
    rows = [read_json(p) for p in task_evals]
    for t, row in enumerate(rows):
        if row["after_task"] != t:
            raise ValueError(f"'{task_evals[t]}' is the evaluation after task {row['after_task']}, expected {t}")
    checksums = [checkpoint_digest(p) for p in task_states]  # a corrupt one fails here; a delta's full digest
    init = read_json(init_eval)
    if len(rows) < len(init["acc"]):  # a first-k candidate: its k tasks of the initial evaluation
        init = {**init, **{k: init[k][: len(rows)] for k in ("acc", "acc_task_il", "top5") if k in init}}
    result = run_record(spec, init, rows, checksums)
    write_json(out, result)
    log.info("%s: %s", result["run"], " ".join(f"{k}={v:.2f}" for k, v in result["metrics"].items()))
