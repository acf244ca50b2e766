"""Run one grid cell start to finish in this Python process, through the same job functions as the DAG.

For tests, notebooks and hyperparameter exploration where a Snakemake job per
task would cost more in start-up than the training itself. Files go to
``workdir`` with the DAG's layout, so results are the DAG's numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clgrid import config as cl
from clgrid import jobs
from clgrid.io import read_json


def run_cell(config: dict[str, Any], benchmark: str, backbone: str, method: str, seed: int, workdir: str | Path,
             placement: str | None = None, features: bool = False, workers: int = 2,
             checkpoint_every_s: float | None = 600.0) -> dict[str, Any]:
    """Train and evaluate every task of one run; returns its metrics.json content.

    ``config`` must be validated (defaults filled) already, as the Snakefile does.

    ``placement`` (``auto``, ``device``, ``host``; None: the config's ``data_placement``, as the DAG passes it) and
    ``workers`` are the train job's ``--placement`` and ``--workers``. ``features``: when the run qualifies for the
    frozen-feature cache (``clgrid.config.uses_feature_cache``), compute it once as the ``extract_features`` job does
    and train on it, as the DAG does; False (the default) trains through the backbone. ``checkpoint_every_s``: the
    job's in-job checkpoint interval (None: none; 600 s, the train verb's default).
    """
    root = Path(workdir)
    datasets = []
    for name in cl.datasets_of(config, benchmark):
        path = root / "data" / f"{name}.npz"
        if not path.exists():
            jobs.prepare_dataset(cl.dataset_spec(config, name), str(path))
        datasets.append(str(path))
    scenario = root / "scenarios" / f"{benchmark}.json"
    if not scenario.exists():
        jobs.prepare_scenario(cl.scenario_spec(config, benchmark), datasets, str(scenario))
    init_dir = root / "init" / benchmark / backbone / f"s{seed}"
    init_spec = cl.init_spec(config, benchmark, backbone, seed)
    if not (init_dir / "eval.json").exists():
        jobs.init_model(init_spec, str(scenario), str(init_dir / "model.pt"))
        jobs.evaluate(init_spec, str(scenario), datasets, str(init_dir / "model.pt"), str(init_dir / "eval.json"))
    spec = cl.run_spec(config, benchmark, backbone, method, seed)
    cache = None
    if features and cl.uses_feature_cache(config, benchmark, backbone, method):
        feature_seed = cl.feature_seed(config, backbone, seed)
        feature_init = root / "init" / benchmark / backbone / f"s{feature_seed}" / "model.pt"
        if not feature_init.exists():
            jobs.init_model(cl.init_spec(config, benchmark, backbone, feature_seed), str(scenario), str(feature_init))
        cache = root / "features" / benchmark / backbone / f"s{feature_seed}" / "features.pt"
        if not cache.exists():
            jobs.extract_features(cl.init_spec(config, benchmark, backbone, feature_seed), str(scenario), datasets,
                                  str(feature_init), str(cache))
    run_dir = root / "runs" / benchmark / backbone / method / f"s{seed}"
    tasks = list(range(cl.n_tasks(config, benchmark)))
    states = [str(run_dir / f"task{t}" / "state.pt") for t in tasks]
    evals = [str(run_dir / f"task{t}" / "eval.json") for t in tasks]
    jobs.train_tasks(spec, str(scenario), datasets, str(init_dir / "model.pt"), tasks, states, evals,
                     placement=placement or config.get("data_placement", "auto"), workers=workers,
                     checkpoint_every_s=checkpoint_every_s, features=str(cache) if cache else None)
    jobs.run_metrics(spec, str(init_dir / "eval.json"), evals, str(run_dir / "metrics.json"), states)
    return read_json(run_dir / "metrics.json")


def validated(config_path: str | Path = "config/config.yaml", schema_path: str | Path = "workflow/schemas/config.schema.yaml", **overrides: Any) -> dict[str, Any]:
    """Load a config YAML, apply top-level overrides, validate it with the workflow's schema and checks."""
    import yaml

    from clgrid.config import check

    config = yaml.safe_load(Path(config_path).read_text())
    config.update(overrides)
    return check(config, schema_path, files=[config_path], overrides=overrides)
