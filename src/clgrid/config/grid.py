"""Experiment config -> the grid of runs and the resolved spec each job receives.

A run is (benchmark, backbone, run name, seed); its folder is ``results/runs/{benchmark}/{backbone}/{method}/s{seed}``,
where the run name is a registered method (``ewc``) or a *variant* defined under ``variants``
(``er_500: {method: replay, params: {buffer_size: 500}, train: {lr: 0.1}}``, ``clgrid.config.sweeps``), so one method
runs with several parameter sets side by side under stable, readable names. A job gets only the part of the config
that can change its result, as JSON, so Snakemake reruns a job when that part changes and nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from clgrid.catalog import archs
from clgrid.catalog import methods as method_catalog
from clgrid.config.errors import ConfigError, choices, did_you_mean
from clgrid.data.datasets import DATASETS
from clgrid.io import config_hash


@dataclass(frozen=True)
class Run:
    benchmark: str
    backbone: str
    method: str  # the run name: a registered method or a variant
    seed: int

    @property
    def id(self) -> str:
        return f"{self.benchmark}/{self.backbone}/{self.method}/s{self.seed}"


def registered_methods(config: dict[str, Any]) -> list[str]:
    """Method names the schema knows (validation fills a ``method_params`` block for each)."""
    return sorted(config["method_params"])


def datasets_of(config: dict[str, Any], benchmark: str) -> list[str]:
    """Every dataset a benchmark reads: its task datasets, then its evaluation-only sets."""
    bench = config["benchmarks"][benchmark]
    names = list(bench["datasets"]) if bench["scenario"] == "dataset_sequence" else [bench["dataset"]]
    for set_cfg in (bench.get("eval_sets") or {}).values():
        if set_cfg["dataset"] not in names:
            names.append(set_cfg["dataset"])
    return names


def run_datasets(config: dict[str, Any], benchmark: str, method: str) -> list[str]:
    """The datasets a run's training jobs read: the benchmark's, then any its method draws from (ZSCL's reference
    images)."""
    names = datasets_of(config, benchmark)
    return names + [name for name in method_datasets(config, method) if name not in names]


def method_datasets(config: dict[str, Any], run_name: str) -> list[str]:
    """The datasets a run's method names in its hyperparameters (its ``dataset_params`` fact: ZSCL's
    ``reference_dataset``), unset ones left out."""
    method, params, _ = method_of(config, run_name)
    return [params[key] for key in method_catalog.fact(method, "dataset_params", []) if params.get(key)]


def dataset_classes(config: dict[str, Any], name: str, where: tuple = ()) -> int:
    """A dataset's class count, known before it is prepared; ``where`` is the field that names it (for errors)."""
    options = config.get("datasets", {}).get(name, {})
    if name in DATASETS:
        return DATASETS[name].n_classes
    if "n_classes" in options:
        return int(options["n_classes"])
    imported = sorted(n for n in config.get("datasets", {}) if n not in DATASETS)
    raise ConfigError(
        f"unknown dataset '{name}'{did_you_mean(name, [*DATASETS, *imported])}", path=where or ("datasets", name),
        value=name, allowed="a registered dataset (" + choices(sorted(DATASETS)) + ")"
        + (f" or one imported under datasets ({choices(imported)})" if imported else ""),
        fix=f"correct the name, or import your own arrays with datasets: {{{name}: {{npz: path/to/file.npz, "
            "n_classes: K}}")


def train_samples(config: dict[str, Any], benchmark: str) -> int | None:
    """Training samples a benchmark's tasks hold together, from the dataset registry (None where unknown).

    An upper bound: holdout classes count, and ``max_per_class_train`` caps every class. A domain-incremental
    task is a transformed copy of the whole training set, so those count once per task.
    """
    bench = config["benchmarks"][benchmark]
    names = bench["datasets"] if bench["scenario"] == "dataset_sequence" else [bench["dataset"]]
    total = 0
    for name in names:
        info = DATASETS.get(name)
        options = config.get("datasets", {}).get(name, {})
        if info is None or info.n_train is None or "npz" in options or "path" in options:
            return None  # imported arrays: their size is only known once read
        n = info.n_train
        if options.get("max_per_class_train"):
            n = min(n, info.n_classes * int(options["max_per_class_train"]))
        total += n
    if bench["scenario"] in ("permuted", "rotated"):
        total *= int(bench["n_tasks"])
    return total


def runs(config: dict[str, Any]) -> list[Run]:
    """Every run of the grid: benchmarks × backbones × methods × seeds, in config order, less the cells ``only``
    leaves out."""
    return [
        Run(benchmark, backbone, method, int(seed))
        for benchmark in config["benchmarks"]
        for backbone in config["backbones"]
        for method in config["methods"]
        if in_grid(config, benchmark, backbone, method)
        for seed in config["seeds"]
    ]


def in_grid(config: dict[str, Any], benchmark: str, backbone: str, method: str | None = None) -> bool:
    """Whether the grid runs ``method`` (any method when None) with ``backbone`` on ``benchmark``: ``only`` limits a
    benchmark to some backbones and methods (a pretraining stage that one backbone and method run, for example),
    or to a union of such parts."""
    limits = (config.get("only") or {}).get(benchmark) or {}
    return any(backbone in part.get("backbones", [backbone]) and (method is None or method in part.get("methods",
                                                                                                       [method]))
               for part in only_parts(limits))


def only_parts(limits: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A benchmark's ``only`` entry as a list of {backbones, methods} parts (one mapping, or a list whose union
    runs: resnet18 with every row, resnet50 with the baseline only)."""
    return list(limits) if isinstance(limits, list) else [limits]


def cells(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The (benchmark, backbone) pairs with runs, in config order: each has its figures and initial models."""
    return [(benchmark, backbone) for benchmark in config["benchmarks"] for backbone in config["backbones"]
            if in_grid(config, benchmark, backbone)
            and any(in_grid(config, benchmark, backbone, method) for method in config["methods"])]


def init_source(config: dict[str, Any], benchmark: str, backbone: str, seed: int) -> dict[str, Any] | None:
    """The run checkpoint a backbone's initial model starts from (its ``init_from``, defaults resolved), or None.

    Defaults: the run's own benchmark and backbone (one of the two must differ), the last task, the run's own seed,
    the head kept on the same benchmark and replaced on another. ``config_hash`` is the source run's: it enters
    this init spec, so changing the first stage's config changes every hash downstream and reruns the second stage.
    """
    given = config["backbones"][backbone].get("init_from")
    if not given:
        return None
    source_benchmark = given.get("benchmark", benchmark)
    source_backbone = given.get("backbone", backbone)
    source_seed = int(seed) if given.get("seed", "same") == "same" else int(given["seed"])
    task = given.get("task", "last")
    task = n_tasks(config, source_benchmark) - 1 if task == "last" else int(task)
    head = given.get("head") or ("keep" if source_benchmark == benchmark else "replace")
    source_spec = run_spec(config, source_benchmark, source_backbone, given["method"], source_seed)
    return {"benchmark": source_benchmark, "backbone": source_backbone, "method": given["method"],
            "seed": source_seed, "task": task, "head": head, "config_hash": config_hash(source_spec)}


def cross_run_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Run-name pairs to compare with cross-run CKA: the config's list, else each run and its frozen counterpart."""
    given = (config.get("analysis") or {}).get("cross_run_pairs")
    if given is not None:
        return [(a, b) for a, b in given]
    pairs = []
    for a in config["methods"]:
        method_a, params_a, train_a = method_of(config, a)
        for b in config["methods"]:
            method_b, params_b, train_b = method_of(config, b)
            rest_a = {k: v for k, v in params_a.items() if k not in ("freeze", "freeze_k")}
            rest_b = {k: v for k, v in params_b.items() if k not in ("freeze", "freeze_k")}
            if (a != b and method_a == method_b and rest_a == rest_b and train_a == train_b
                    and params_b.get("freeze") == "all" and params_a.get("freeze", "none") != "all"):
                pairs.append((a, b))
    return pairs


def uses_feature_cache(config: dict[str, Any], benchmark: str, backbone: str, method: str) -> bool:
    """Whether a run trains on cached features: its backbone is frozen, inputs are not augmented, the method allows it.

    Frozen means the method's ``freeze: all``, or CLIP's ``train_mode`` ``fc`` or ``text`` (the image encoder never
    trains). Augmented inputs change every epoch, so their features cannot be computed once.
    """
    if not config.get("feature_cache", True):
        return False
    from clgrid.config.selection import role

    if role(config, method) == "candidate":
        return False  # a candidate evaluates on validation splits, which the cache does not hold
    if (config["benchmarks"][benchmark].get("transform") or {}).get("augment", "none") != "none":
        return False
    method_name, params, _ = method_of(config, method)
    if method_catalog.fact(method_name, "feature_cache_unsupported"):  # it needs the backbone itself
        return False
    backbone_cfg = config["backbones"][backbone]
    return params.get("freeze", "none") == "all" or archs.get(backbone_cfg["arch"]).frozen(backbone_cfg)


def backbone_is_seeded(backbone_cfg: dict[str, Any]) -> bool:
    """Whether a backbone's initial weights depend on the seed (random init, or another run's checkpoint of the same
    seed) or come from pretrained weights (or one pinned seed's checkpoint)."""
    source = backbone_cfg.get("init_from")
    if source:
        return source.get("seed", "same") == "same"
    return not archs.get(backbone_cfg["arch"]).weights(backbone_cfg)


def needs_download(backbone_cfg: dict[str, Any]) -> bool:
    """Whether a backbone names pretrained weights to fetch (a tag, hub name or ``imagenet``), not a local path."""
    name = archs.get(backbone_cfg["arch"]).weights(backbone_cfg)
    return bool(name) and not os.path.exists(name)


def feature_seed(config: dict[str, Any], backbone: str, seed: int) -> int:
    """The seed whose initial model the cached features come from: the run's own for a randomly initialised
    backbone, the first seed for pretrained weights (the same in every seed, so every seed shares one cache)."""
    return int(seed) if backbone_is_seeded(config["backbones"][backbone]) else int(config["seeds"][0])


def n_tasks(config: dict[str, Any], benchmark: str) -> int:
    bench = config["benchmarks"][benchmark]
    if bench["scenario"] == "dataset_sequence":
        return len(bench["datasets"])
    return int(bench["n_tasks"])


def dataset_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """What fixes a prepared dataset: its name and its preparation options (import file, image size, ...)."""
    return {"dataset": name, "options": config.get("datasets", {}).get(name, {})}


def scenario_spec(config: dict[str, Any], benchmark: str) -> dict[str, Any]:
    return {"benchmark": benchmark, "benchmark_cfg": _without_train(config["benchmarks"][benchmark])}


PRECISION_KEYS = ("precision", "deterministic")
"""Training settings that say how a job computes, not what it trains: a benchmark's, shared by its runs, its
initial evaluation (the FWT baseline) and its feature cache, so each run computes in one precision everywhere."""


def init_spec(config: dict[str, Any], benchmark: str, backbone: str, seed: int) -> dict[str, Any]:
    """What fixes a seed's initial weights: the scenario (head size), the backbone and the seed; and the benchmark's
    ``train.precision`` / ``deterministic`` when it sets them, which the initial evaluation and the feature cache
    compute under (absent: the device's default, and the spec, its hash and every finished file stay as they were)."""
    spec = {
        **scenario_spec(config, benchmark),
        "backbone": backbone,
        "backbone_cfg": config["backbones"][backbone],
        "seed": int(seed),
        "device": config["device"],
    }
    arithmetic = {k: v for k, v in config["benchmarks"][benchmark].get("train", {}).items() if k in PRECISION_KEYS}
    if arithmetic:
        spec["train"] = arithmetic
    source = init_source(config, benchmark, backbone, seed)
    if source:
        spec["init_from"] = source
    return spec


def method_of(config: dict[str, Any], run_name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(registered method, its resolved parameters, training overrides) of a run name."""
    variant = config.get("variants", {}).get(run_name)
    if variant is None:
        return run_name, config.get("method_params", {}).get(run_name, {}), {}
    params = variant.get("resolved_params") or {**config["method_params"][variant["method"]], **variant.get("params", {})}
    return variant["method"], params, variant.get("train", {})


def run_spec(config: dict[str, Any], benchmark: str, backbone: str, method: str, seed: int) -> dict[str, Any]:
    """Everything that can change a run's numbers: the init spec plus training and method settings."""
    from clgrid.config.selection import spec_fields

    method_name, params, train_overrides = method_of(config, method)
    return {
        **init_spec(config, benchmark, backbone, seed),
        "train": {**config["benchmarks"][benchmark]["train"], **train_overrides},
        "method": method,
        "method_name": method_name,
        "method_params": params,
        "feature_cache": uses_feature_cache(config, benchmark, backbone, method),
        **spec_fields(config, benchmark, backbone, method, seed),
    }


def analysis_spec(config: dict[str, Any], benchmark: str, backbone: str, method: str, seed: int) -> dict[str, Any]:
    """A run's spec plus the analysis settings: changing them reruns the analyses, not the training."""
    return {**run_spec(config, benchmark, backbone, method, seed), "analysis": config["analysis"]}


def _without_train(bench: dict[str, Any]) -> dict[str, Any]:
    # Training settings do not change the task splits, so they stay out of the scenario's spec; how tasks are
    # grouped into jobs changes no number at all.
    return {k: v for k, v in bench.items() if k not in ("train", "tasks_per_job")}
