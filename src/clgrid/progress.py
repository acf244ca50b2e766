"""The grid's progress at a glance: every run of a study as one cell (tasks done / total and its state), read from
the results folder and Snakemake's own state, while the study runs (locally or under ``--profile slurm``) or after.

Where each state comes from:

- **done**: every task's ``eval.json`` is there, and the run's ``metrics.json`` (a per-task selection candidate has
  none: its tasks are enough).
- **diverged**: a task's ``eval.json`` or the run's ``metrics.json`` says ``"diverged"`` (``train.on_divergence:
  record``); the run finished, its numbers from that task on are NaN.
- **running**: Snakemake marked one of the run's files incomplete (``.snakemake/incomplete/``: it does so when a
  job starts, locally or when it submits it to SLURM, and clears the mark when the job's outputs are there) while a
  Snakemake process holds the folder's lock (``.snakemake/locks/``). Any job of the run counts: training, metrics,
  analysis. A cluster job's mark holds its job id: with ``squeue`` on PATH the cell says whether SLURM runs it or
  still queues it. A mark with no lock is a job that was cut off:
  the cell reads failed ("interrupted"); ``snakemake --rerun-incomplete`` reruns it.
- **failed**: the last Snakemake log that ran the job (``.snakemake/log/*.snakemake.log``) has an ``Error in rule
  ...`` block whose outputs or logs are the run's files (or those of a job it needs: its initial model, scenario,
  datasets, feature cache), and the run is not running again.
- **pending**: none of the above: not started, or waiting for its inputs.

Pure Python: ``clgrid progress`` and the ``progress`` rule never import torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from base64 import urlsafe_b64decode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from clgrid import paths

STATES = ("done", "running", "failed", "diverged", "pending")
MARK = {"done": "", "running": " ▶", "failed": " ✗", "diverged": " ⚠ div", "pending": ""}
"""What a cell of the text grid adds after ``done/total``."""
LEGEND = ("legend: tasks evaluated/tasks of the run; ▶ running, ✗ failed, ⚠ div diverged, … every task evaluated and "
          "the run's metrics not yet written; no mark: done (n/n) or pending")


@dataclass(frozen=True)
class PlannedRun:
    """One run the DAG builds: its grid position, the role it plays (``final``: a run of the grid; ``candidate``: a
    selection's candidate or test row), its tasks' eval.json and its metrics.json (None if it has none)."""

    benchmark: str
    backbone: str
    method: str
    seed: int
    role: str
    task_evals: tuple[str, ...]
    metrics: str | None
    upstream: tuple[str, ...] = ()
    """Files the run's jobs need that other jobs make (scenario, datasets, feature cache): their failure is its."""

    @property
    def folder(self) -> str:
        return os.path.dirname(paths.RUN_METRICS.format(benchmark=self.benchmark, backbone=self.backbone,
                                                        method=self.method, seed=self.seed))

    @property
    def init_folder(self) -> str:
        return os.path.dirname(paths.INIT_MODEL.format(benchmark=self.benchmark, backbone=self.backbone,
                                                       seed=self.seed))

    def to_json(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "backbone": self.backbone, "method": self.method, "seed": self.seed,
                "role": self.role, "task_evals": list(self.task_evals), "metrics": self.metrics,
                "upstream": list(self.upstream)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "PlannedRun":
        return cls(row["benchmark"], row["backbone"], row["method"], int(row["seed"]), row["role"],
                   tuple(row["task_evals"]), row.get("metrics"), tuple(row.get("upstream", ())))


@dataclass
class CellState:
    """A run's progress: ``tasks_done`` of ``n_tasks`` evaluated, its state (one of ``STATES``) and why."""

    run: PlannedRun
    tasks_done: int
    n_tasks: int
    state: str
    detail: str = ""

    @property
    def text(self) -> str:
        waiting = self.state == "pending" and self.n_tasks and self.tasks_done == self.n_tasks
        return f"{self.tasks_done}/{self.n_tasks}" + (" …" if waiting else MARK[self.state])


@dataclass
class SnakemakeState:
    """What Snakemake's folder says: files of jobs that started and have not finished, whether a Snakemake process
    holds the folder, and the outputs and logs of the jobs the newest log says failed."""

    incomplete: dict[str, str | None] = field(default_factory=dict)
    """output path -> the job's cluster id (SLURM's job id; None for a local job)."""
    locked: bool = False
    cluster_states: dict[str, str] = field(default_factory=dict)
    """SLURM's state of each of the user's jobs (``squeue --me``), by job id; empty without squeue."""
    failed: set[str] = field(default_factory=set)
    log: str | None = None


def plan(config: dict[str, Any]) -> list[PlannedRun]:
    """Every run of a (checked) config: the grid's runs, then the selections' candidates and test rows."""
    from clgrid import config as cl
    from clgrid.config import selection as cl_selection
    from clgrid.plan import feature_cache, run_dataset_files, task_files

    def planned(run, role: str) -> PlannedRun:
        per_task_candidate = cl_selection.is_per_task_candidate(config, run.method)
        metrics = None if per_task_candidate else paths.RUN_METRICS.format(**vars(run))
        evals = task_files(paths.TASK_EVAL, config, run.benchmark, run.backbone, run.method, run.seed)
        cache = feature_cache(config, run.benchmark, run.backbone, run.method, run.seed)
        upstream = [paths.SCENARIO.format(benchmark=run.benchmark),
                    *run_dataset_files(config, run.benchmark, run.method), *([cache] if cache else [])]
        return PlannedRun(run.benchmark, run.backbone, run.method, int(run.seed), role, tuple(evals), metrics,
                          tuple(os.path.normpath(p) for p in upstream))

    out = [planned(run, "final") for run in cl.runs(config)]
    seen = {(r.benchmark, r.backbone, r.method, r.seed) for r in out}
    for run in cl_selection.candidate_runs(config):
        key = (run.benchmark, run.backbone, run.method, int(run.seed))
        if key not in seen:
            seen.add(key)
            out.append(planned(run, "candidate"))
    return out


def load_config(configfiles: Sequence[str | os.PathLike], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config Snakemake would run with these ``--configfile``s (merged in order) and ``--config`` values,
    checked and filled."""
    from clgrid import config as cl
    from clgrid.predict import SCHEMA

    return cl.load_configs(configfiles, SCHEMA, overrides)


def _decode_marker(relative: Path) -> str | None:
    """The output path an incomplete marker stands for: Snakemake names it by the path's urlsafe base64, cut into
    folder levels whose names start with ``@`` but the last."""
    parts = [p[1:] if p.startswith("@") else p for p in relative.parts]
    try:
        return urlsafe_b64decode("".join(parts).encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def incomplete_files(directory: str | os.PathLike) -> dict[str, str | None]:
    """The outputs Snakemake marked incomplete in ``directory/.snakemake/incomplete`` (paths relative to it), each
    with the external job id the marker holds (a cluster job's id, given when Snakemake submitted it)."""
    root = Path(directory) / ".snakemake" / "incomplete"
    out: dict[str, str | None] = {}
    if not root.is_dir():
        return out
    for folder, _, names in os.walk(root):
        for name in names:
            if name == "migration_underway":
                continue
            decoded = _decode_marker((Path(folder) / name).relative_to(root))
            if decoded:
                key = os.path.normpath(os.path.relpath(decoded, directory) if os.path.isabs(decoded) else decoded)
                record = _read(Path(folder) / name) or {}
                jobid = record.get("external_jobid")
                out[key] = str(jobid) if jobid not in (None, "") else None
    return out


ERROR_BLOCK = re.compile(r"^Error in rule \S+")  # "Error in rule X:" (the log file), "..., jobid: N" (the logger)


def _files_of(line: str) -> list[str]:
    """The paths of an ``output:`` or ``log:`` line of a Snakemake log's job block ([] for any other line)."""
    key, _, value = line.strip().partition(": ")
    if key not in ("output", "log"):
        return []
    value = value.replace(" (check log file(s) for error details)", "")
    return [os.path.normpath(p.strip()) for p in value.split(", ") if p.strip()]


def log_jobs(log_text: str) -> tuple[set[str], set[str]]:
    """(outputs and logs of every job a Snakemake log names, those of the jobs its ``Error in rule ...:`` blocks
    say failed)."""
    named: set[str] = set()
    failed: set[str] = set()
    in_error = False
    for line in log_text.splitlines():
        if line and not line.startswith((" ", "\t")):
            in_error = bool(ERROR_BLOCK.match(line.strip()))
            continue
        files = _files_of(line)
        named.update(files)
        if in_error:
            failed.update(files)
    return named, failed


def failed_files(log_texts: Sequence[str]) -> set[str]:
    """Files of the jobs that failed in the last Snakemake run that ran them: ``log_texts`` oldest first, each
    log's failures replacing what older logs said of the same files (a rerun that worked clears them)."""
    failed: set[str] = set()
    for text in log_texts:
        named, failed_here = log_jobs(text)
        failed = (failed - named) | failed_here
    return failed


MAX_LOGS = 50
"""How many of the newest Snakemake logs say which jobs failed (older failures were rerun or are long stale)."""


def snakemake_logs(directory: str | os.PathLike) -> list[Path]:
    """The folder's Snakemake logs, oldest first (their names are their start times)."""
    return sorted((Path(directory) / ".snakemake" / "log").glob("*.snakemake.log"))[-MAX_LOGS:]


def snakemake_state(directory: str | os.PathLike) -> SnakemakeState:
    """Read ``directory/.snakemake``: incomplete marks, locks, and the jobs its logs say failed."""
    locks = Path(directory) / ".snakemake" / "locks"
    logs = snakemake_logs(directory)
    return SnakemakeState(
        incomplete=incomplete_files(directory),
        locked=locks.is_dir() and any(locks.iterdir()),
        failed=failed_files([log.read_text(errors="replace") for log in logs]),
        log=os.path.relpath(logs[-1], directory) if logs else None,
    )


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # being written, or broken: the rule that writes it says so when it reads it


def _under(files: Iterable[str], folder: str) -> bool:
    prefix = folder.rstrip("/") + "/"
    return any(f.startswith(prefix) for f in files)


def cell_state(run: PlannedRun, directory: str | os.PathLike, snakemake: SnakemakeState) -> CellState:
    """One run's progress (module docstring: what each state means and where it is read from)."""
    root = Path(directory)
    done = [t for t in run.task_evals if (root / t).is_file()]
    metrics = _read(root / run.metrics) if run.metrics and (root / run.metrics).is_file() else None
    diverged, diverged_at = False, None
    if metrics is not None:  # the run's record says it all: no need to open its tasks' evaluations
        diverged = bool(metrics.get("diverged"))
        diverged_at = (metrics.get("diverged_at") or {}).get("task")
    else:
        for path in done:
            row = _read(root / path) or {}
            if row.get("diverged"):
                diverged = True
                diverged_at = row["diverged"].get("task") if isinstance(row["diverged"], dict) else None
                break
    finished = len(done) == len(run.task_evals) and (run.metrics is None or metrics is not None)
    cell = CellState(run, len(done), len(run.task_evals), "pending")
    started = [f for f in snakemake.incomplete if f.startswith(run.folder.rstrip("/") + "/")]
    if started and snakemake.locked:
        cell.state = "running"
        cluster_ids = sorted({snakemake.incomplete[f] for f in started if snakemake.incomplete[f]})
        if cluster_ids:
            cell.detail = "cluster job " + ", ".join(
                f"{i} {snakemake.cluster_states.get(i, 'not in squeue')}" for i in cluster_ids)
    elif started:
        cell.state, cell.detail = "failed", "interrupted: rerun with snakemake --rerun-incomplete"
    elif not finished and (_under(snakemake.failed, run.folder) or _under(snakemake.failed, run.init_folder)
                           or snakemake.failed.intersection(run.upstream)):
        cell.state, cell.detail = "failed", "its job's error is in .snakemake/log/ and the job's log"
    elif diverged:
        cell.state, cell.detail = "diverged", f"at task {diverged_at}" if diverged_at is not None else ""
    elif finished:
        cell.state = "done"
    return cell


def collect(runs: Sequence[PlannedRun], directory: str | os.PathLike = ".",
            cluster_states: dict[str, str] | None = None) -> list[CellState]:
    """Every run's progress, in plan order; ``cluster_states`` (``slurm_jobs()``) says which running cells' jobs
    SLURM still queues."""
    state = snakemake_state(directory)
    state.cluster_states = dict(cluster_states or {})
    return [cell_state(run, directory, state) for run in runs]


def slurm_jobs(squeue: str | None = None) -> dict[str, str] | None:
    """SLURM's state of each of the user's jobs (``squeue --me``: job id -> ``RUNNING``, ``PENDING``, ...), or None
    where squeue is not on PATH or fails."""
    squeue = squeue or shutil.which("squeue")
    if not squeue:
        return None
    try:
        out = subprocess.run([squeue, "--me", "--noheader", "--format=%i %T"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(line.split(None, 1) for line in out.splitlines() if len(line.split()) == 2)


def slurm_counts(jobs: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in jobs.values():
        counts[state.lower()] = counts.get(state.lower(), 0) + 1
    return counts


# ---- the grid as text and Markdown -------------------------------------------------------------------------------

def _rows(cells: Sequence[CellState]) -> tuple[list[int], dict[tuple[str, str, str], dict[int, CellState]]]:
    seeds = sorted({c.run.seed for c in cells})
    rows: dict[tuple[str, str, str], dict[int, CellState]] = {}
    for c in cells:
        rows.setdefault((c.run.benchmark, c.run.backbone, c.run.method), {})[c.run.seed] = c
    return seeds, rows


def summary_line(cells: Sequence[CellState]) -> str:
    """``12 runs: 8 done, 1 running, 2 failed, 1 diverged, 0 pending; tasks 52/60 evaluated``."""
    counts = {s: sum(c.state == s for c in cells) for s in STATES}
    tasks, total = sum(c.tasks_done for c in cells), sum(c.n_tasks for c in cells)
    return (f"{len(cells)} runs: " + ", ".join(f"{counts[s]} {s}" for s in STATES)
            + f"; tasks {tasks}/{total} evaluated")


def _table(cells: Sequence[CellState]) -> tuple[list[str], list[list[str]]]:
    seeds, rows = _rows(cells)
    header = ["benchmark", "backbone", "method"] + [f"s{s}" for s in seeds]
    body = [[*key, *(by_seed[s].text if s in by_seed else "" for s in seeds)] for key, by_seed in rows.items()]
    return header, body


def _sections(cells: Sequence[CellState]) -> list[tuple[str, list[CellState]]]:
    finals = [c for c in cells if c.run.role == "final"]
    candidates = [c for c in cells if c.run.role != "final"]
    out = [("runs", finals)] if finals else []
    if candidates:
        out.append(("selection candidates", candidates))
    return out


def _problems(cells: Sequence[CellState], markdown: bool = False) -> list[str]:
    if markdown:
        return [f"- {c.state}: `{c.run.folder}`" + (f" ({c.detail})" if c.detail else "")
                for c in cells if c.state in ("failed", "diverged")]
    return [f"{c.state:<8} {c.run.folder}" + (f"  ({c.detail})" if c.detail else "")
            for c in cells if c.state in ("failed", "diverged") or (c.state == "running" and c.detail)]


def format_text(cells: Sequence[CellState], slurm: dict[str, str] | None = None) -> str:
    """The grid as aligned text: a row per benchmark × backbone × method, a column per seed, then a summary."""
    lines = []
    for title, part in _sections(cells):
        header, body = _table(part)
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        lines.append(f"{title} ({summary_line(part)})")
        for row in [header, *body]:
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        lines.append("")
    lines += _problems(cells)
    lines.append(f"total: {summary_line(cells)}")
    if slurm is not None:
        counts = slurm_counts(slurm)
        lines.append("SLURM (squeue --me): " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs"))
    lines.append(LEGEND)
    return "\n".join(lines)


def format_markdown(cells: Sequence[CellState]) -> str:
    """The same grid as Markdown tables (the ``progress`` rule's progress.md, shown in ``snakemake --report``)."""
    out = ["# Progress of the grid", "", f"**{summary_line(cells)}**", ""]
    for title, part in _sections(cells):
        header, body = _table(part)
        out += [f"## {title.capitalize()}", "", "| " + " | ".join(header) + " |",
                "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in body]
        out.append("")
    problems = _problems(cells, markdown=True)
    if problems:
        out += ["## Failed and diverged runs", ""] + problems + [""]
    out.append(LEGEND.replace("legend: ", "Cells: ") + " (docs/progress.md).")
    return "\n".join(out) + "\n"


def write_markdown(cells: Sequence[CellState], out: str | os.PathLike) -> Path:
    from clgrid.io import atomic_path

    with atomic_path(out) as tmp:
        Path(tmp).write_text(format_markdown(cells))
    return Path(out)
