"""The selection jobs: choose a sweep's values from its candidates' validation metrics, choose one task's learning
rate or stability weight (FACIL), and adopt a per-task choice as a final run's task state, evaluated on the test
sets. The rules of ``clgrid.selection``; this layer reads and writes the files."""

from __future__ import annotations

import logging
from typing import Any

from clgrid import storage
from clgrid.io import load_torch, write_json
from clgrid.spec import RunSpec

log = logging.getLogger("clgrid")


def select_hyperparameters(spec: dict[str, Any], metrics_files: list[str], out: str) -> None:
    """A whole-stream or first-k selection: every candidate's validation score, the chosen values (``out``)."""
    from clgrid.selection import select_from_metrics

    record = select_from_metrics(spec, metrics_files)
    write_json(out, record)
    log.info("%s: chose %s (validation %s %.2f) among %d candidates", spec["base"], record["values"], spec["metric"],
             record["score"], len(record["candidates"]))


def select_task(spec: dict[str, Any], evals: list[str], out: str, plasticity: str | None = None) -> None:
    """One task's per-task selection (stage plasticity: the learning rate; stability: the weight)."""
    from clgrid.selection import select_task as choose

    choose(spec, evals, out, plasticity)


def adopt_state(spec: RunSpec | dict[str, Any], scenario_path: str, dataset_files: list[str], state: str,
                choice: str, task_id: int, out_state: str, out_eval: str, threads: int = 1) -> None:
    """A per-task final run's task: the chosen candidate's state, as it is, evaluated on the test sets; its record
    names the values chosen for the task."""
    from clgrid.context import JobContext
    from clgrid.evaluate import eval_record
    from clgrid.io import read_json
    from clgrid.methods import get_method

    spec = RunSpec.of(spec)
    chosen = read_json(choice)
    checkpoint = load_torch(state)
    if checkpoint["task"] != task_id:
        raise ValueError(f"'{state}' holds the state after task {checkpoint['task']}, not task {task_id}")
    ctx = JobContext(spec, scenario_path, dataset_files, threads)
    model = ctx.build_model()
    model.load_state_dict(checkpoint["model"])
    model.to(ctx.device).eval()
    method = get_method(spec.method_name)(model, spec.method_params, ctx.scenario["n_classes"],
                                          inputs_device=ctx.inputs_device, precision=ctx.precision)
    if "method" in checkpoint:
        method.load_state_dict(checkpoint["method"])
    record = eval_record(spec, ctx, method.predict, task_id, method)
    key = chosen["stability_key"]
    record["selected"] = {"task": task_id, "lr": chosen["lr"], key: chosen[key], "candidate": chosen["chosen"],
                          "plasticity": chosen["plasticity"], "threshold": chosen["threshold"],
                          "reached": chosen["reached"]}
    record["epoch_losses"] = checkpoint.get("epoch_losses", [])
    storage.save_state(out_state, checkpoint)  # the chosen state itself, with its checksum beside it
    write_json(out_eval, record)
