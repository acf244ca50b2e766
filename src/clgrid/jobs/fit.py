"""The train job: consecutive tasks of one run, each continued from the state the task before it saved."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clgrid import storage
from clgrid.io import load_torch, remove_output, write_json
from clgrid.spec import RunSpec

log = logging.getLogger("clgrid")


def train_tasks(spec: RunSpec | dict[str, Any], scenario_path: str, dataset_files: list[str], prev: str,
                task_ids: list[int], out_states: list[str], out_evals: list[str], threads: int = 1,
                placement: str = "auto", workers: int = 2, checkpoint_every_s: float | None = 600.0,
                features: str | None = None, task_logs: list[str] | tuple[str, ...] = ()) -> None:
    """Train consecutive tasks of one run in this process: exactly ``train`` once per task, task t reading the
    state task t-1 wrote (so the files are byte-identical to one job per task), with the scenario, datasets and
    test sets loaded once. ``task_logs``: a file per task that also gets that task's log messages."""
    if not (len(task_ids) == len(out_states) == len(out_evals)) or (task_logs and len(task_logs) != len(task_ids)):
        raise ValueError(f"{len(task_ids)} tasks need as many --out-state, --out-eval (and --task-logs) paths; got "
                         f"{len(out_states)}, {len(out_evals)} and {len(task_logs)}")
    if any(b != a + 1 for a, b in zip(task_ids, task_ids[1:])):
        raise ValueError(f"tasks {task_ids} are not consecutive: each task continues from the one before it")
    ctx = None
    for i, task_id in enumerate(task_ids):
        handler = _task_log_handler(task_logs[i]) if task_logs else None
        try:
            ctx = train(spec, scenario_path, dataset_files, out_states[i - 1] if i else prev, task_id, out_states[i],
                        out_evals[i], threads, placement, workers, checkpoint_every_s, features, ctx=ctx)
        finally:
            if handler is not None:
                logging.getLogger().removeHandler(handler)
                handler.close()


def _task_log_handler(path: str) -> logging.Handler:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def train(spec: RunSpec | dict[str, Any], scenario_path: str, dataset_files: list[str], prev: str, task_id: int,
          out_state: str, out_eval: str, threads: int = 1, placement: str = "auto", workers: int = 2,
          checkpoint_every_s: float | None = 600.0, features: str | None = None, ctx=None):
    """Continue a run from the previous task's state, train task ``task_id``, save its state and evaluation
    (``clgrid.fit.continue_run``); returns the job's context for the next task of a multi-task job.

    Preemption-safe: every ``checkpoint_every_s`` seconds of training the job writes ``<state>.resume.pt``
    atomically; a job started again after a kill continues from it and ends with the same state and metrics as
    an uninterrupted run. The file is removed once the task's outputs exist. Evaluation runs in the same process:
    a second job would pay the torch import again for milliseconds of work. ``features``: a frozen backbone's
    cache (``clgrid.models.feature_cache``) the head trains and is evaluated on.
    """
    from clgrid.context import JobContext
    from clgrid.fit import continue_run

    from clgrid.selection import resolved

    spec = resolved(RunSpec.of(spec), task_id)  # a selected run's chosen values; a per-task candidate's lr
    reference = spec.reference_dataset
    if ctx is None:  # a job training several tasks passes the context of its first task on
        ctx = JobContext(spec, scenario_path, dataset_files, threads, placement, workers, features=features,
                         extra_datasets=(reference,) if reference else ())
    previous = load_torch(prev)
    if previous["task"] != task_id - 1:
        raise ValueError(f"'{prev}' holds the state after task {previous['task']}, but task {task_id} needs task {task_id - 1}")
    state, record = continue_run(spec, ctx, previous, task_id, out_state, checkpoint_every_s, features)
    storage.save_state(out_state, state)  # storage.checkpoints: full, or its delta to the initial model
    write_json(out_eval, record)
    remove_output(out_state + ".resume.pt")
    return ctx
