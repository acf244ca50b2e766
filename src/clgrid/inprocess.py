"""Run one grid cell start to finish in this Python process, through the same job functions as the DAG.

For tests, notebooks and hyperparameter exploration where a Snakemake job per
task would cost more in start-up than the training itself. Files go to
``workdir`` with the DAG's layout, so results are the DAG's numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clgrid import jobs
from clgrid.io import read_json
from clgrid.plan import Step, run_plan


def run_cell(config: dict[str, Any], benchmark: str, backbone: str, method: str, seed: int, workdir: str | Path,
             placement: str | None = None, features: bool = False, workers: int = 2,
             checkpoint_every_s: float | None = 600.0) -> dict[str, Any]:
    """Train and evaluate every task of one run; returns its metrics.json content.

    ``config`` must be validated (defaults filled) already, as the Snakefile does. The jobs are the DAG's, from
    the same plan (``clgrid.plan.run_plan``), with ``workdir`` in place of ``results/``; a job whose outputs exist
    shared with other runs (datasets, scenario, initial model, feature cache, and the runs an ``init_from`` backbone
    starts from) is skipped when its outputs exist; the run's own training and metrics always run.

    ``placement`` (``auto``, ``device``, ``host``; None: the config's ``data_placement``, as the DAG passes it) and
    ``workers`` are the train job's ``--placement`` and ``--workers``. ``features``: when the run qualifies for the
    frozen-feature cache (``clgrid.config.uses_feature_cache``), compute it once as the ``extract_features`` job does
    and train on it, as the DAG does; False (the default) trains through the backbone. ``checkpoint_every_s``: the
    job's in-job checkpoint interval (None: none; 600 s, the train verb's default).
    """
    from clgrid.config.selection import selection_of

    record = selection_of(config, method) or {}
    if record.get("role") == "final" or record.get("protocol") == "per_task":
        raise ValueError(f"'{method}' is a run of a selection study ({record['protocol']}): its values come from a "
                         "selection the Snakemake DAG makes (the select_hyperparameters or select_stability "
                         "checkpoint); run it with snakemake, or run a candidate or an ordinary variant here")
    root = Path(workdir)
    train_options = {"placement": placement or config.get("data_placement", "auto"), "workers": workers,
                     "checkpoint_every_s": checkpoint_every_s}
    metrics = None
    own = {"benchmark": benchmark, "backbone": backbone, "method": method, "seed": int(seed)}
    for step in run_plan(config, benchmark, backbone, method, seed, use_feature_cache=features):
        at = _under(root, step)
        mine = step.rule in ("train", "run_metrics") and all(step.spec.get(k) == v for k, v in own.items())
        if mine and step.rule == "run_metrics":
            metrics = at.outputs["metrics"]
        if mine or not all(Path(p).exists() for p in _files(at.outputs)):
            _run(at, train_options)
    return read_json(metrics)


def _files(paths: dict[str, Any]) -> list[str]:
    return [p for value in paths.values() for p in (value if isinstance(value, list) else [value])]


def _under(root: Path, step: Step) -> Step:
    """``step`` with every ``results/...`` path moved under ``root``."""
    def moved(value):
        if isinstance(value, list):
            return [moved(v) for v in value]
        return str(root / Path(value).relative_to("results"))

    return Step(step.rule, step.spec, {k: moved(v) for k, v in step.inputs.items()},
                {k: moved(v) for k, v in step.outputs.items()})


def _run(step: Step, train_options: dict[str, Any]) -> None:
    """The job of ``step``, called as the rule's shell command calls it (one thread, as the rules give a job)."""
    i, o = step.inputs, step.outputs
    if step.rule == "download_weights":
        jobs.download_weights(step.spec, o["marker"])
    elif step.rule == "prepare_dataset":
        jobs.prepare_dataset(step.spec, o["data"])
    elif step.rule == "prepare_scenario":
        jobs.prepare_scenario(step.spec, i["data"], o["scenario"])
    elif step.rule in ("init_model", "init_model_from_run"):
        jobs.init_model(step.spec, i["scenario"], o["model"], source=i.get("source"))
    elif step.rule == "evaluate_init":
        jobs.evaluate(step.spec, i["scenario"], i["data"], i["state"], o["eval"])
    elif step.rule == "extract_features":
        jobs.extract_features(step.spec, i["scenario"], i["data"], i["init"], o["features"])
    elif step.rule == "train":
        jobs.train_tasks(step.spec, i["scenario"], i["data"], i["prev"], list(range(len(o["states"]))), o["states"],
                         o["evals"], features=i.get("features"), **train_options)
    elif step.rule == "run_metrics":
        jobs.run_metrics(step.spec, i["init"], i["evals"], o["metrics"], i["states"])
    else:
        raise ValueError(f"no in-process job for rule '{step.rule}'")


def validated(config_path: str | Path = "config/config.yaml", schema_path: str | Path = "workflow/schemas/config.schema.yaml", **overrides: Any) -> dict[str, Any]:
    """Load a config YAML, apply top-level overrides, validate it with the workflow's schema and checks."""
    import yaml

    from clgrid.config import check

    config = yaml.safe_load(Path(config_path).read_text())
    config.update(overrides)
    return check(config, schema_path, files=[config_path], overrides=overrides)
