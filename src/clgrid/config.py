"""Experiment config → the grid of runs and the resolved spec each job receives.

The Snakemake layer validates the YAML against ``workflow/schemas/config.schema.yaml``
(which also fills defaults) and then calls ``check_config`` for the rules a
schema cannot express. A run is (benchmark, backbone, run name, seed); its folder
is ``results/runs/{benchmark}/{backbone}/{method}/s{seed}``, where the run name
is a registered method (``ewc``) or a *variant* defined under ``variants``
(``er_500: {method: replay, params: {buffer_size: 500}, train: {lr: 0.1}}``), so
one method runs with several parameter sets side by side under stable,
readable names. A job gets only the part of the config that can change its
result, as JSON, so Snakemake reruns a job when that part changes and nothing else.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Callable

from clgrid.data.datasets import DATASETS


class ConfigError(ValueError):
    """A config that passed the schema but cannot describe a runnable grid."""


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
    reference = method_of(config, method)[1].get("reference_dataset")
    return names + [reference] if reference and reference not in names else names


def dataset_classes(config: dict[str, Any], name: str) -> int:
    options = config.get("datasets", {}).get(name, {})
    if name in DATASETS:
        return DATASETS[name].n_classes
    if "n_classes" in options:
        return int(options["n_classes"])
    raise ConfigError(
        f"unknown dataset '{name}'; valid: {', '.join(sorted(DATASETS))}, or import your own arrays with "
        f"datasets: {{{name}: {{npz: path/to/file.npz, n_classes: K}}}}"
    )


def check_config(config: dict[str, Any], validate: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Cross-field checks the schema cannot express; errors name the field and the fix.

    ``validate`` (the workflow's schema validation) is used to check and fill each
    variant's parameters and training overrides against the method's own schema block.
    """
    for name, options in config.get("datasets", {}).items():
        if name not in DATASETS and "npz" not in options:
            raise ConfigError(f"datasets.{name}: '{name}' is not a registered dataset, so it needs npz: <file> "
                              f"and n_classes; registered: {', '.join(sorted(DATASETS))}")
        if name not in DATASETS and "n_classes" not in options:
            raise ConfigError(f"datasets.{name}: an imported dataset that is not registered needs n_classes")
    for name, bench in config["benchmarks"].items():
        where = f"benchmarks.{name}"
        kind = bench["scenario"]
        if kind == "dataset_sequence":
            if not bench.get("datasets"):
                raise ConfigError(f"{where}.datasets: a dataset_sequence needs the list of its datasets, one per task")
            if bench.get("n_tasks") not in (None, len(bench["datasets"])):
                raise ConfigError(f"{where}.n_tasks = {bench['n_tasks']} but datasets lists {len(bench['datasets'])}; "
                                  "a dataset sequence has one task per dataset (leave n_tasks out)")
            bench["n_tasks"] = len(bench["datasets"])
        else:
            if "dataset" not in bench:
                raise ConfigError(f"{where}.dataset is required for scenario {kind}")
            if "n_tasks" not in bench:
                raise ConfigError(f"{where}.n_tasks is required for scenario {kind}")
        for dname in datasets_of(config, name):
            dataset_classes(config, dname)
        if kind in ("class_incremental", "task_incremental"):
            n_classes = dataset_classes(config, bench["dataset"])
            trained = n_classes - int(bench.get("holdout_classes", 0))
            if trained < 1 or trained % bench["n_tasks"]:
                valid = [k for k in range(1, max(trained, 1) + 1) if trained % k == 0]
                raise ConfigError(
                    f"{where}.n_tasks = {bench['n_tasks']} does not split the {trained} trained classes "
                    f"of '{bench['dataset']}' into equal tasks; valid: {valid}"
                )
            order = bench.get("class_order", "sorted")
            if isinstance(order, list) and sorted(order) != list(range(n_classes)):
                raise ConfigError(f"{where}.class_order must be a permutation of 0..{n_classes - 1}, got {order}")
    expand_sweeps(config)
    _check_variants(config, validate)
    for run_name in config["methods"]:
        reference = method_of(config, run_name)[1].get("reference_dataset")
        if reference:
            try:
                dataset_classes(config, reference)
            except ConfigError as err:
                raise ConfigError(f"{run_name}: reference_dataset: {err}") from None
    _check_published(config)
    for a, b in (config.get("analysis") or {}).get("cross_run_pairs") or []:
        for name in (a, b):
            if name not in config["methods"]:
                raise ConfigError(f"analysis.cross_run_pairs: {name!r} is not a run in methods; "
                                  f"valid: {', '.join(config['methods'])}")


def sweep_value(value: Any) -> str:
    """A swept value as it appears in a run name: 0.001, 100, 1e-05, true, reservoir."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if "e" not in repr(value) else repr(value)
    return str(value)


def expand_sweeps(config: dict[str, Any]) -> None:
    """Replace each swept run in ``methods`` by one variant per point of its grid of values.

    ``sweeps: {ewc: {params: {ewc_lambda: [1, 10]}, train: {lr: [0.01, 0.1]}}}`` makes the runs
    ``ewc~ewc_lambda=1,lr=0.01`` ... (keys sorted, params before train): the name says every swept value, so
    adding a value adds only its runs and leaves the others' folders as they are. A sweep of a variant starts
    from the variant's settings. Each expanded variant records ``sweep: {base, values}`` for the sweep figures.
    """
    sweeps = config.get("sweeps") or {}
    if not sweeps or config.get("_sweeps_expanded"):
        return
    variants = config.setdefault("variants", {})
    registered = registered_methods(config)
    for base, sweep in sweeps.items():
        if base not in config["methods"]:
            raise ConfigError(f"sweeps.{base}: '{base}' is not in methods {config['methods']}; add it there or "
                              "remove the sweep")
        variant = variants.get(base, {"method": base} if base in registered else None)
        if variant is None:
            raise ConfigError(f"sweeps.{base}: not a registered method or a variant")
        method = variant["method"]
        known = set(config["method_params"][method])
        for key in sweep.get("params", {}):
            if key not in known:
                raise ConfigError(f"sweeps.{base}.params.{key}: {method} has no hyperparameter '{key}'; "
                                  f"valid: {', '.join(sorted(known))}")
        axes = [("params", k, v) for k, v in sorted(sweep.get("params", {}).items())]
        axes += [("train", k, v) for k, v in sorted(sweep.get("train", {}).items())]
        names = []
        for point in itertools.product(*(values for _, _, values in axes)):
            values = {key: value for (_, key, _), value in zip(axes, point)}
            name = base + "~" + ",".join(f"{key}={sweep_value(value)}" for key, value in values.items())
            params = {**variant.get("params", {}), **{k: v for (part, k, _), v in zip(axes, point) if part == "params"}}
            train = {**variant.get("train", {}), **{k: v for (part, k, _), v in zip(axes, point) if part == "train"}}
            variants[name] = {"method": method, "params": params, "train": train,
                              "sweep": {"base": base, "values": values}}
            names.append(name)
        i = config["methods"].index(base)
        config["methods"] = config["methods"][:i] + names + config["methods"][i + 1 :]
    config["_sweeps_expanded"] = True


def sweep_points(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Run name -> {base, values} of every run a sweep made (what the sweep figures plot)."""
    return {name: v["sweep"] for name, v in config.get("variants", {}).items() if "sweep" in v}


def _check_variants(config: dict[str, Any], validate) -> None:
    registered = registered_methods(config)
    variants = config.get("variants", {})
    for name in variants:
        if name in registered and variants[name]["method"] != name:
            raise ConfigError(f"variants.{name}: a variant named after the registered method '{name}' must use it "
                              f"(method: {name}); rename the variant")
    for i, name in enumerate(config["methods"]):
        if name not in registered and name not in variants:
            raise ConfigError(f"unknown method '{name}' at methods[{i}]; valid: {', '.join(registered)}, "
                              f"or a variant defined under variants: ({', '.join(sorted(variants)) or 'none defined'})")
    for name, variant in variants.items():
        if validate is None:
            continue
        trial = copy.deepcopy({k: v for k, v in config.items() if k not in ("variants", "sweeps", "_sweeps_expanded")})
        trial["method_params"][variant["method"]] = {**config["method_params"][variant["method"]],
                                                     **variant.get("params", {})}
        for bench in trial["benchmarks"].values():
            bench["train"] = {**bench["train"], **variant.get("train", {})}
        try:
            validate(trial)
        except Exception as err:  # the schema's own message names the field inside the method block
            raise ConfigError(f"variants.{name} ({variant['method']}): {err}") from None
        variant["resolved_params"] = trial["method_params"][variant["method"]]


def _check_published(config: dict[str, Any]) -> None:
    published = config.get("published")
    if not published:
        return
    for bench in published.get("numbers", {}):
        if bench not in config["benchmarks"]:
            raise ConfigError(f"published.numbers.{bench}: no benchmark of that name; "
                              f"valid: {', '.join(config['benchmarks'])}")


def runs(config: dict[str, Any]) -> list[Run]:
    """Every run of the grid: benchmarks × backbones × methods × seeds, in config order."""
    return [
        Run(benchmark, backbone, method, int(seed))
        for benchmark in config["benchmarks"]
        for backbone in config["backbones"]
        for method in config["methods"]
        for seed in config["seeds"]
    ]


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


FEATURE_CACHE_UNSUPPORTED = {
    "lora": "it adds adapters inside the backbone",
    "zscl": "it distils the image encoder on reference images",
}
"""Methods that need the backbone itself even when it is frozen: their runs never use the feature cache."""


def uses_feature_cache(config: dict[str, Any], benchmark: str, backbone: str, method: str) -> bool:
    """Whether a run trains on cached features: its backbone is frozen, inputs are not augmented, the method allows it.

    Frozen means the method's ``freeze: all``, or CLIP's ``train_mode`` ``fc`` or ``text`` (the image encoder never
    trains). Augmented inputs change every epoch, so their features cannot be computed once.
    """
    if not config.get("feature_cache", True):
        return False
    if (config["benchmarks"][benchmark].get("transform") or {}).get("augment", "none") != "none":
        return False
    method_name, params, _ = method_of(config, method)
    if method_name in FEATURE_CACHE_UNSUPPORTED:
        return False
    backbone_cfg = config["backbones"][backbone]
    clip_frozen = backbone_cfg["arch"] == "clip" and backbone_cfg.get("train_mode", "whole") in ("fc", "text")
    return params.get("freeze", "none") == "all" or clip_frozen


def backbone_is_seeded(backbone_cfg: dict[str, Any]) -> bool:
    """Whether a backbone's initial weights depend on the seed (random init) or come from pretrained weights."""
    arch = backbone_cfg["arch"]
    if arch == "clip":
        return not backbone_cfg.get("pretrained", "openai")
    if arch == "flava":
        return not backbone_cfg.get("pretrained", "facebook/flava-full")
    return not backbone_cfg.get("weights")


def needs_download(backbone_cfg: dict[str, Any]) -> bool:
    """Whether a backbone names pretrained weights to fetch (a tag, hub name or ``imagenet``), not a local path."""
    import os

    arch = backbone_cfg["arch"]
    if arch == "clip":
        name = backbone_cfg.get("pretrained", "openai")
    elif arch == "flava":
        name = backbone_cfg.get("pretrained", "facebook/flava-full")
    else:
        name = backbone_cfg.get("weights")
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


def init_spec(config: dict[str, Any], benchmark: str, backbone: str, seed: int) -> dict[str, Any]:
    """What fixes a seed's initial weights: the scenario (head size), the backbone and the seed."""
    return {
        **scenario_spec(config, benchmark),
        "backbone": backbone,
        "backbone_cfg": config["backbones"][backbone],
        "seed": int(seed),
        "device": config["device"],
    }


def method_of(config: dict[str, Any], run_name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(registered method, its resolved parameters, training overrides) of a run name."""
    variant = config.get("variants", {}).get(run_name)
    if variant is None:
        return run_name, config.get("method_params", {}).get(run_name, {}), {}
    params = variant.get("resolved_params") or {**config["method_params"][variant["method"]], **variant.get("params", {})}
    return variant["method"], params, variant.get("train", {})


def run_spec(config: dict[str, Any], benchmark: str, backbone: str, method: str, seed: int) -> dict[str, Any]:
    """Everything that can change a run's numbers: the init spec plus training and method settings."""
    method_name, params, train_overrides = method_of(config, method)
    return {
        **init_spec(config, benchmark, backbone, seed),
        "train": {**config["benchmarks"][benchmark]["train"], **train_overrides},
        "method": method,
        "method_name": method_name,
        "method_params": params,
        "feature_cache": uses_feature_cache(config, benchmark, backbone, method),
    }


def analysis_spec(config: dict[str, Any], benchmark: str, backbone: str, method: str, seed: int) -> dict[str, Any]:
    """A run's spec plus the analysis settings: changing them reruns the analyses, not the training."""
    return {**run_spec(config, benchmark, backbone, method, seed), "analysis": config["analysis"]}


def _without_train(bench: dict[str, Any]) -> dict[str, Any]:
    # Training settings do not change the task splits, so they stay out of the scenario's spec.
    return {k: v for k, v in bench.items() if k != "train"}
