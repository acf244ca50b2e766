"""One tidy table of everything: a row per run, its config as columns and every metric it has, as CSV and Parquet
(``results/tables/all_runs.csv`` and ``all_runs.parquet``), the file pandas, R (``arrow::read_parquet``) or a
spreadsheet opens to start an analysis of its own.

Rows: the grid's runs, then the selections' candidates and test rows (``role``). Columns, in this order:
``benchmark, backbone, method, method_name, seed, role``; the method's parameters
(``param.<name>``); the training settings (``train.<name>``); ``dataset, scenario, n_tasks``; what a selection chose
(``selected.<name>``, ``selected_from``); ``evaluated_on, diverged, diverged_task``; the provenance
(``config_hash, git_commit, device``); then every metric of ``metrics.json`` under its own name (``acc``, ``bwt``,
... as ``clgrid.catalog.metrics`` orders them). A value that is a list or a mapping (an MLP's ``hidden`` sizes) is
written as its JSON text, and a column mixing text with numbers is text, so the Parquet schema is one type per
column.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    import pandas as pd

ID_COLUMNS = ["benchmark", "backbone", "method", "method_name", "seed", "role"]
ROLES = {None: "run", "final": "selected", "candidate": "candidate", "test_row": "test_row"}
"""A run's ``role`` column: a plain grid run, a selection's final run, one of its candidates (evaluated on
validation data) or a test row (a candidate's values on the test sets)."""
PROVENANCE = ["config_hash", "git_commit", "device"]


def tidy_runs(config: Mapping[str, Any]) -> list[Any]:
    """The runs with a metrics.json: the grid's (``clgrid.config.runs``), then the selections' candidates and test
    rows (``clgrid.config.selection.candidate_runs``) but per-task candidates, which have none."""
    from clgrid import config as cl
    from clgrid.config import selection as cl_selection

    config = dict(config)
    out = list(cl.runs(config))
    seen = {(r.benchmark, r.backbone, r.method, r.seed) for r in out}
    for run in cl_selection.candidate_runs(config):
        key = (run.benchmark, run.backbone, run.method, run.seed)
        if key not in seen and not cl_selection.is_per_task_candidate(config, run.method):
            seen.add(key)
            out.append(run)
    return out


def finished_metrics(config: Mapping[str, Any], directory: str | os.PathLike = ".") -> list[str]:
    """The metrics.json of ``tidy_runs`` that exist under ``directory`` (a study still running, or with failures)."""
    from clgrid import paths

    found = [Path(directory) / paths.RUN_METRICS.format(**vars(run)) for run in tidy_runs(config)]
    return [str(path) for path in found if path.is_file()]


def tidy_specs(config: Mapping[str, Any], runs: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """What the table needs of the config, per benchmark and per run name (so its size grows with the grid's
    benchmarks and methods, not its runs): the benchmark's dataset, scenario, tasks and training settings; the
    method's registered name, resolved parameters and training overrides. Torch- and pandas-free (the Snakefile imports it); the rule passes it as JSON."""
    from clgrid import config as cl
    from clgrid.config import selection as cl_selection

    benchmarks: dict[str, Any] = {}
    methods: dict[str, Any] = {}
    for run in runs:
        if run.benchmark not in benchmarks:
            bench = config["benchmarks"][run.benchmark]
            benchmarks[run.benchmark] = {"dataset": "+".join(cl.datasets_of(dict(config), run.benchmark)),
                                         "scenario": bench.get("scenario"),
                                         "n_tasks": cl.n_tasks(dict(config), run.benchmark),
                                         "train": dict(bench.get("train", {}))}
        if run.method not in methods:
            name, params, train = cl.method_of(dict(config), run.method)
            record = cl_selection.selection_of(dict(config), run.method) or {}
            methods[run.method] = {"method_name": name, "method_params": dict(params), "train": dict(train),
                                   "role": ROLES[record.get("role")]}
    return {"benchmarks": benchmarks, "methods": methods}


def _flat(value: Any) -> Any:
    """A cell value: scalars as they are, lists and mappings as JSON text."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def tidy_row(metrics: Mapping[str, Any], specs: Mapping[str, Any]) -> dict[str, Any]:
    """One run's row from its ``metrics.json`` and the specs of ``tidy_specs``."""
    bench = specs["benchmarks"].get(metrics["benchmark"], {})
    method = specs["methods"].get(metrics["method"], {})
    prov = metrics.get("provenance", {})
    row: dict[str, Any] = {"benchmark": metrics["benchmark"], "backbone": metrics["backbone"],
                           "method": metrics["method"],
                           "method_name": method.get("method_name", metrics["method"].split("~")[0]),
                           "seed": int(metrics["seed"]), "role": method.get("role", "run")}
    row.update({f"param.{k}": _flat(v) for k, v in sorted(method.get("method_params", {}).items())})
    train = {**bench.get("train", {}), **method.get("train", {})}
    row.update({f"train.{k}": _flat(v) for k, v in sorted(train.items())})
    row.update({"dataset": bench.get("dataset"), "scenario": bench.get("scenario"),
                "n_tasks": len(metrics.get("acc_matrix", [])) or bench.get("n_tasks")})
    selection = metrics.get("selection") or {}
    row.update({f"selected.{k}": _flat(v) for k, v in sorted((selection.get("values") or {}).items())})
    if selection.get("per_task"):
        from clgrid.plots.tables.summary import selected_text

        row["selected.per_task"] = selected_text(selection)
    if selection:
        row["selected_from"] = selection.get("chosen") or selection.get("base")
    row.update({"evaluated_on": metrics.get("evaluated_on", "test"), "diverged": bool(metrics.get("diverged", False)),
                "diverged_task": (metrics.get("diverged_at") or {}).get("task")})
    row.update({k: prov.get(k) for k in PROVENANCE})
    row.update({k: v for k, v in metrics.get("metrics", {}).items()})
    return row


def _column_order(columns: list[str]) -> list[str]:
    from clgrid.plots.tables.summary import ordered_metrics

    def group(prefix: str) -> list[str]:
        return sorted(c for c in columns if c.startswith(prefix))

    fixed = (ID_COLUMNS + group("param.") + group("train.") + ["dataset", "scenario", "n_tasks"] + group("selected.")
             + ["selected_from", "evaluated_on", "diverged", "diverged_task"] + PROVENANCE)
    fixed = [c for c in fixed if c in columns]
    metric_cols = ordered_metrics([c for c in columns if c not in fixed])
    rest = sorted(c for c in columns if c not in fixed and c not in metric_cols)
    return fixed + metric_cols + rest


def _one_type(column: pd.Series) -> pd.Series:
    """A column Parquet can hold: text when its values mix text (or booleans) with numbers."""
    import pandas as pd

    kinds = {type(v) for v in column if v is not None and not (isinstance(v, float) and pd.isna(v))}
    numeric = {int, float}
    if len(kinds) > 1 and not kinds <= numeric:
        return column.map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    return column


def tidy_frame(metrics_files: Iterable[str | os.PathLike], specs: Mapping[str, Any]) -> pd.DataFrame:
    """Every run's row, in input order (see the module docstring for the columns)."""
    import pandas as pd

    from clgrid.io import read_json

    rows = [tidy_row(read_json(path), specs) for path in metrics_files]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=ID_COLUMNS)
    frame = frame[_column_order(list(frame.columns))]
    for name in frame.columns:
        kinds = {type(row[name]) for row in rows if row.get(name) is not None}
        if kinds == {int} or name == "diverged_task":
            frame[name] = frame[name].astype("Int64")  # integers with gaps (another method's parameter) stay integers
        elif frame[name].dtype == object:
            frame[name] = _one_type(frame[name])
    return frame


def write_tidy_table(metrics_files: Iterable[str | os.PathLike], specs: Mapping[str, Any],
                     out_csv: str | os.PathLike, out_parquet: str | os.PathLike) -> list[Path]:
    """all_runs.csv and all_runs.parquet: the same rows and columns (Parquet keeps the types)."""
    from clgrid.io import atomic_path

    frame = tidy_frame(list(metrics_files), specs)
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(out_parquet) as tmp:
        frame.to_parquet(tmp, index=False, engine="pyarrow")
    return [Path(out_csv), Path(out_parquet)]
