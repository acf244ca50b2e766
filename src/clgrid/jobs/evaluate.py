"""The evaluation job: the accuracy of a saved model (the initial weights: the FWT baseline) on every test set."""

from __future__ import annotations

from typing import Any

from clgrid.io import load_torch, write_json
from clgrid.spec import RunSpec


def evaluate(spec: RunSpec | dict[str, Any], scenario_path: str, dataset_files: list[str], state: str, out: str,
             threads: int = 1) -> None:
    """Accuracy of a saved model (any checkpoint) on every task's test set."""
    from clgrid.context import JobContext
    from clgrid.evaluate import eval_record

    spec = RunSpec.of(spec)
    ctx = JobContext(spec, scenario_path, dataset_files, threads)
    model = ctx.build_model()
    checkpoint = load_torch(state)
    model.load_state_dict(checkpoint["model"])
    model.to(ctx.device).eval()
    write_json(out, eval_record(spec, ctx, model, checkpoint["task"]))
