"""The jobs of one run, in order, with the specs they receive and the files they read and write: the plan both the
Snakemake DAG (``workflow/rules/common.smk``'s input functions) and the in-process runner (``clgrid.inprocess``)
follow, so the two cannot drift.

Paths are the templates of ``clgrid.paths`` filled in (``results/...``). Pure Python: the Snakefile imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clgrid import config as cl
from clgrid import paths
from clgrid.config.selection import run_tasks


@dataclass(frozen=True)
class Step:
    """One job: the rule that runs it, the spec it receives (the JSON dict the rule passes), its inputs and outputs
    by role (a role holds a path or a list of paths)."""

    rule: str
    spec: Any
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


def dataset_files(config: dict[str, Any], benchmark: str) -> list[str]:
    """The prepared datasets a benchmark's scenario, initial evaluation and feature cache read."""
    return [paths.DATASET.format(dataset=name) for name in cl.datasets_of(config, benchmark)]


def run_dataset_files(config: dict[str, Any], benchmark: str, method: str) -> list[str]:
    """A training job's datasets: the benchmark's and any its method draws from (ZSCL's reference images)."""
    return [paths.DATASET.format(dataset=name) for name in cl.run_datasets(config, benchmark, method)]


def previous_state(benchmark: str, backbone: str, method: str, seed: int | str, task: int) -> str:
    """Task 0 starts from the seed's shared initial weights, task t from task t-1's state."""
    if int(task) == 0:
        return paths.INIT_MODEL.format(benchmark=benchmark, backbone=backbone, seed=seed)
    return paths.TASK_STATE.format(benchmark=benchmark, backbone=backbone, method=method, seed=seed, task=int(task) - 1)


def feature_cache(config: dict[str, Any], benchmark: str, backbone: str, method: str, seed: int | str) -> str | None:
    """The frozen backbone's feature cache a run trains on (None for runs that train their backbone)."""
    if not cl.uses_feature_cache(config, benchmark, backbone, method):
        return None
    return paths.FEATURES.format(benchmark=benchmark, backbone=backbone,
                                 seed=cl.feature_seed(config, backbone, int(seed)))


def task_files(template: str, config: dict[str, Any], benchmark: str, backbone: str, method: str,
               seed: int | str) -> list[str]:
    """``template`` (a per-task path: TASK_STATE, TASK_EVAL) for every task of a run, in task order."""
    return [template.format(benchmark=benchmark, backbone=backbone, method=method, seed=seed, task=t)
            for t in range(run_tasks(config, benchmark, method))]


def weights_marker(config: dict[str, Any], backbone: str) -> str | None:
    """The download_weights marker of a backbone with weights to fetch (None for random or local-file weights)."""
    if not cl.needs_download(config["backbones"][backbone]):
        return None
    return paths.WEIGHTS_DONE.format(backbone=backbone)


def source_state(config: dict[str, Any], benchmark: str, backbone: str, seed: int | str) -> str | None:
    """The task state a backbone's initial model starts from (its ``init_from``), or None."""
    source = cl.init_source(config, benchmark, backbone, int(seed))
    return None if source is None else _state_of(source)


def _state_of(source: dict[str, Any]) -> str:
    """The task state file a resolved ``init_from`` (``config.init_source``) names."""
    return paths.TASK_STATE.format(**{k: source[k] for k in ("benchmark", "backbone", "method", "seed", "task")})


def _init_steps(config: dict[str, Any], benchmark: str, backbone: str, seed: int) -> list[Step]:
    """The initial model of a seed (its weights fetched first when they are pretrained); for a backbone that starts
    from another run (``init_from``), that run's jobs first and the ``init_model_from_run`` job."""
    where = {"benchmark": benchmark, "backbone": backbone, "seed": seed}
    marker = weights_marker(config, backbone)
    steps = [Step("download_weights", config["backbones"][backbone], {}, {"marker": marker})] if marker else []
    inputs = {"scenario": paths.SCENARIO.format(benchmark=benchmark), **({"weights": marker} if marker else {})}
    rule = "init_model"
    source = cl.init_source(config, benchmark, backbone, seed)
    if source:
        steps = run_plan(config, source["benchmark"], source["backbone"], source["method"], source["seed"]) + steps
        inputs["source"] = _state_of(source)
        rule = "init_model_from_run"
    return steps + [Step(rule, cl.init_spec(config, benchmark, backbone, seed), inputs,
                         {"model": paths.INIT_MODEL.format(**where)})]


def run_plan(config: dict[str, Any], benchmark: str, backbone: str, method: str, seed: int,
             use_feature_cache: bool = True) -> list[Step]:
    """Every job one run needs, in an order that runs each after the jobs it reads from (the DAG's edges): its
    datasets, the scenario, the seed's initial model and its evaluation, the feature cache when the run uses one,
    the training of every task (one job, as ``tasks_per_job`` may group them: the files are the same) and the
    run's metrics. Jobs shared with other runs appear in every run's plan. ``use_feature_cache=False``: train
    through the backbone even where the DAG would use the cache (an in-process check of the cache itself)."""
    seed = int(seed)
    where = {"benchmark": benchmark, "backbone": backbone, "seed": seed}
    scenario = paths.SCENARIO.format(benchmark=benchmark)
    data = dataset_files(config, benchmark)
    steps = [Step("prepare_dataset", cl.dataset_spec(config, name), {}, {"data": paths.DATASET.format(dataset=name)})
             for name in cl.run_datasets(config, benchmark, method)]
    steps.append(Step("prepare_scenario", cl.scenario_spec(config, benchmark), {"data": data}, {"scenario": scenario}))
    steps += _init_steps(config, benchmark, backbone, seed)
    init_model, init_eval = paths.INIT_MODEL.format(**where), paths.INIT_EVAL.format(**where)
    steps.append(Step("evaluate_init", cl.init_spec(config, benchmark, backbone, seed),
                      {"scenario": scenario, "data": data, "state": init_model}, {"eval": init_eval}))
    cache = feature_cache(config, benchmark, backbone, method, seed) if use_feature_cache else None
    if cache:
        cache_seed = cl.feature_seed(config, backbone, seed)
        if cache_seed != seed:
            steps += [s for s in _init_steps(config, benchmark, backbone, cache_seed)
                      if s.rule in ("init_model", "init_model_from_run")]
        steps.append(Step("extract_features", cl.init_spec(config, benchmark, backbone, cache_seed),
                          {"scenario": scenario, "data": data,
                           "init": paths.INIT_MODEL.format(benchmark=benchmark, backbone=backbone, seed=cache_seed)},
                          {"features": cache}))
    states = task_files(paths.TASK_STATE, config, benchmark, backbone, method, seed)
    evals = task_files(paths.TASK_EVAL, config, benchmark, backbone, method, seed)
    spec = cl.run_spec(config, benchmark, backbone, method, seed)
    train_inputs = {"scenario": scenario, "data": run_dataset_files(config, benchmark, method), "prev": init_model,
                    **({"features": cache} if cache else {})}
    steps.append(Step("train", spec, train_inputs, {"states": states, "evals": evals}))
    steps.append(Step("run_metrics", spec, {"init": init_eval, "evals": evals, "states": states},
                      {"metrics": paths.RUN_METRICS.format(method=method, **where)}))
    return steps
