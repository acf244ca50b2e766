"""Analysis jobs: CKA, RankMe and linear probes over a run's checkpoints; cross-run CKA between two runs."""

from __future__ import annotations

from typing import Any

from clgrid.io import read_json, write_json
from clgrid.spec import RunSpec


def analyze_run(spec: RunSpec | dict[str, Any], scenario_path: str, dataset_files: list[str], states: list[str],
                task_evals: list[str], out: str, threads: int = 1) -> None:
    """CKA, RankMe and a linear probe over every checkpoint of one run (``clgrid.analysis.run``)."""
    from clgrid.analysis.run import analyze_run as analyze
    from clgrid.context import JobContext

    spec = RunSpec.of(spec)
    ctx = JobContext(spec, scenario_path, dataset_files, threads)
    acc_matrix = [read_json(p)["acc"] for p in task_evals]
    write_json(out, analyze(spec, ctx, states, acc_matrix))


def compare_runs(spec: RunSpec | dict[str, Any], other_spec: RunSpec | dict[str, Any], scenario_path: str,
                 dataset_files: list[str], states: list[str], other_states: list[str], out: str,
                 threads: int = 1) -> None:
    """Cross-run CKA: two runs' checkpoints after the same task, on the benchmark's fixed evaluation set."""
    from clgrid.analysis.run import compare_runs as compare
    from clgrid.context import JobContext

    spec, other_spec = RunSpec.of(spec), RunSpec.of(other_spec)
    if other_spec.backbone_cfg != spec.backbone_cfg:
        raise ValueError("cross-run CKA compares two runs of one backbone; got two backbone configs")
    ctx = JobContext(spec, scenario_path, dataset_files, threads)  # one context: same scenario, data and architecture
    write_json(out, compare(spec, other_spec, ctx, states, other_states))
