"""Cross-field checks of the grid: sweeps and variants (expanded here), precision per benchmark, reference
datasets, dataset files, published numbers, cross-run pairs, buffers against the training data, and the
backbone's blocks against ``freeze_k`` and the analysis layers."""

from __future__ import annotations

from typing import Any, Callable

from clgrid.catalog import archs
from clgrid.catalog import methods as method_catalog
from clgrid.config.checks.datasets import _check_dataset_files
from clgrid.config.errors import ConfigError, choices, did_you_mean
from clgrid.config.grid import PRECISION_KEYS, dataset_classes, method_of, train_samples
from clgrid.config.sweeps import _check_variants, _param_path, expand_sweeps


def check_grid(config: dict[str, Any], validate: Callable[[dict[str, Any]], None] | None = None) -> None:
    """The runs, their variants and sweeps (expanded here), buffers, analyses and published numbers against the
    benchmarks and backbones (checked before); ``validate`` checks and fills each variant's parameters and
    training overrides against the method's own schema block. Checks that need the backbone's blocks import
    ``clgrid.models`` (torch) only when the config asks for them."""
    expand_sweeps(config)
    _check_variants(config, validate)
    _check_precision_per_benchmark(config)
    for run_name in config["methods"]:
        _, params, _ = method_of(config, run_name)
        if params.get("reference_dataset"):
            dataset_classes(config, params["reference_dataset"],
                            _param_path(config, run_name, "params", "reference_dataset"))
    _check_dataset_files(config)
    _check_published(config)
    for i, pair in enumerate((config.get("analysis") or {}).get("cross_run_pairs") or []):
        for j, name in enumerate(pair):
            if name not in config["methods"]:
                raise ConfigError(f"'{name}' is not a run in methods{did_you_mean(name, config['methods'])}",
                                  path=("analysis", "cross_run_pairs", i, j), value=name,
                                  allowed="runs in methods: " + choices(config["methods"]),
                                  fix="name two runs of methods (or of a sweep's runs), or add the run to methods")
        if len(pair) == 2 and pair[0] == pair[1]:
            raise ConfigError(f"compares the run '{pair[0]}' with itself (CKA 1 everywhere)",
                              path=("analysis", "cross_run_pairs", i), value=pair,
                              allowed="two different runs of methods", fix="name the second run to compare it with")
    _check_buffers(config)
    _check_backbone_fit(config)


def _check_precision_per_benchmark(config: dict[str, Any]) -> None:
    """``train.precision`` and ``deterministic`` belong to a benchmark: its initial evaluation (every run's FWT
    baseline) and its frozen-feature cache are shared by all its runs and compute under them, so a variant or a
    sweep point computing otherwise would be measured against a baseline of other arithmetic."""
    for name, variant in (config.get("variants") or {}).items():
        for key in PRECISION_KEYS:
            if key in (variant.get("train") or {}):
                raise ConfigError(
                    f"sets train.{key} for one run, but it is a benchmark's setting: the initial evaluation (the FWT "
                    "baseline) and the feature cache its runs share compute under the benchmark's",
                    path=_param_path(config, name, "train", key), value=variant["train"][key],
                    allowed=f"train.{key} under benchmarks.<name>.train only",
                    fix=f"remove it here and set benchmarks.<name>.train.{key}; to compare precisions, define one "
                        "benchmark per precision (the same dataset and scenario)")


def _check_published(config: dict[str, Any]) -> None:
    published = config.get("published")
    if not published:
        return
    for bench in published.get("numbers", {}):
        if bench not in config["benchmarks"]:
            raise ConfigError(f"no benchmark named '{bench}'{did_you_mean(bench, config['benchmarks'])}",
                              path=("published", "numbers", bench), value=published["numbers"][bench],
                              allowed="benchmarks of this config: " + choices(config["benchmarks"]),
                              kind="unknown_key", fix="use the benchmark's name as it is under benchmarks")


def _param_error(config: dict[str, Any], run_name: str, key: str, problem: str, value: Any, **fields) -> ConfigError:
    method = method_of(config, run_name)[0]
    return ConfigError(problem, path=_param_path(config, run_name, "params", key), value=value,
                       describe_as=("method_params", method, key), **fields)


def _check_buffers(config: dict[str, Any]) -> None:
    for benchmark in config["benchmarks"]:
        available = train_samples(config, benchmark)
        if available is None:
            continue
        for run_name in config["methods"]:
            method, params, _ = method_of(config, run_name)
            for key in method_catalog.fact(method, "buffer_params", []):  # hyperparameters that count stored samples
                size = params.get(key)
                if isinstance(size, int) and size > available:
                    raise _param_error(
                        config, run_name, key, f"more than the {available} training samples of benchmark "
                        f"'{benchmark}' (all its tasks together), so the buffer can never fill", size,
                        allowed=f"an integer in [1, {available}]",
                        fix=f"lower {key}, or run {run_name} on a benchmark with more training data")


def _check_backbone_fit(config: dict[str, Any]) -> None:
    """freeze_k within the backbone's blocks; analysis layers that the backbone has."""
    layers = (config.get("analysis") or {}).get("layers") or []
    frozen = [run for run in config["methods"] if method_of(config, run)[1].get("freeze") == "first_k"]
    if not layers and not frozen:
        return
    from clgrid.models import declared_blocks  # torch: only for configs that need the blocks

    for backbone, backbone_cfg in config["backbones"].items():
        arch = backbone_cfg["arch"]
        blocks = declared_blocks(backbone_cfg)
        for run_name in frozen:
            k = method_of(config, run_name)[1].get("freeze_k", 1)
            if k > len(blocks):
                raise _param_error(
                    config, run_name, "freeze_k", f"backbone '{backbone}' ({arch}) has only {len(blocks)} blocks "
                    f"with weights: {', '.join(blocks)}", k, allowed=f"an integer in [1, {len(blocks)}]",
                    fix=f"set freeze_k to at most {len(blocks)}, or freeze: all to freeze the whole backbone")
        # Children without weights (declared_blocks leaves them out) are still valid CKA layers.
        children = [*blocks, *archs.get(arch).children_without_weights]
        for i, layer in enumerate(layers):
            parts = layer.split(".")
            if parts[0] in ("head", "preprocess") or (parts[0] == "backbone" and (len(parts) == 1
                                                                                 or parts[1] in children)):
                continue
            hint = f" (did you mean 'backbone.{layer}'?)" if parts[0] in children else did_you_mean(
                layer, ["head", *(f"backbone.{c}" for c in children)])
            raise ConfigError(f"backbone '{backbone}' ({arch}) has no layer '{layer}'{hint}",
                              path=("analysis", "layers", i), value=layer,
                              allowed="head, backbone, " + ", ".join(f"backbone.{c}" for c in children)
                              + ", or a submodule of one (e.g. backbone." + children[0] + ".0)",
                              fix="use one of the allowed names, or layers: null for each block and the head")
