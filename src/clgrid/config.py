"""Experiment config → the grid of runs and the resolved spec each job receives.

The Snakemake layer runs ``clgrid.validation.check``: it validates the YAML against
``workflow/schemas/config.schema.yaml`` (which also fills defaults) and then runs this module's checks and
``clgrid.config_checks``' for the rules a schema cannot express; both raise ``ConfigError``.
A run is (benchmark, backbone, run name, seed); its folder
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
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from clgrid import paths
from clgrid.catalog import archs
from clgrid.catalog import methods as method_catalog
from clgrid.config_errors import MISSING, ConfigError, choices, did_you_mean, field_path, get_path
from clgrid.data.datasets import DATASETS

PREPARED_DATASET = paths.DATASET
"""Where the DAG writes a prepared dataset: once it exists, its raw folder is not needed."""


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


def check_dataset_names(config: dict[str, Any]) -> None:
    """Each dataset under ``datasets`` is registered, or imported from arrays with its class count."""
    for name, options in config.get("datasets", {}).items():
        if name not in DATASETS and "npz" not in options:
            raise ConfigError(
                f"'{name}' is not a registered dataset{did_you_mean(name, DATASETS)}, and it names no npz to import",
                path=("datasets", name), value=options, allowed="a registered dataset (" + choices(sorted(DATASETS))
                + "), or an imported one: {npz: path/to/file.npz, n_classes: K}",
                fix=f"correct the name, or add npz: <file> and n_classes: <K> under datasets.{name}")
        if name not in DATASETS and "n_classes" not in options:
            raise ConfigError("an imported dataset that is not registered needs its class count",
                              path=("datasets", name, "n_classes"), allowed="an integer >= 2", kind="missing",
                              fix=f"add n_classes: <K> under datasets.{name}")


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


def __getattr__(name: str) -> Any:
    """``check_config`` runs this module's checks and ``clgrid.config_checks``' (which read this module) in
    order: it lives in ``clgrid.validation``, and is found here too for the callers that name it here."""
    if name == "check_config":
        from clgrid.validation import check_config

        return check_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _dataset_refs(bench_name: str, bench: dict[str, Any]) -> list[tuple[tuple, str]]:
    """(field, dataset name) of every dataset a benchmark names."""
    where = ("benchmarks", bench_name)
    if bench["scenario"] == "dataset_sequence":
        refs = [((*where, "datasets", i), d) for i, d in enumerate(bench.get("datasets") or [])]
    else:
        refs = [((*where, "dataset"), bench["dataset"])] if "dataset" in bench else []
    refs += [((*where, "eval_sets", s, "dataset"), c["dataset"]) for s, c in (bench.get("eval_sets") or {}).items()]
    return refs


def check_benchmark_fields(config: dict[str, Any], name: str, bench: dict[str, Any]) -> None:
    """A benchmark's datasets, task count, held-out classes and class order, against its scenario."""
    where = ("benchmarks", name)
    kind = bench["scenario"]
    if kind == "dataset_sequence":
        if not bench.get("datasets"):
            raise ConfigError("a dataset_sequence needs the list of its datasets, one per task",
                              path=(*where, "datasets"), allowed="a list of dataset names", kind="missing",
                              fix=f"add datasets: [<first>, <second>, ...] under benchmarks.{name}")
        if bench.get("n_tasks") not in (None, len(bench["datasets"])):
            raise ConfigError(f"a dataset sequence has one task per dataset, and datasets lists "
                              f"{len(bench['datasets'])}", path=(*where, "n_tasks"), value=bench["n_tasks"],
                              allowed=f"{len(bench['datasets'])}, or leave n_tasks out",
                              fix="leave n_tasks out (it follows from datasets)")
        bench["n_tasks"] = len(bench["datasets"])
    else:
        for key, allowed in (("dataset", "a registered or imported dataset name"), ("n_tasks", "an integer >= 1")):
            if key not in bench:
                raise ConfigError(f"scenario {kind} needs {key}", path=(*where, key), allowed=allowed,
                                  kind="missing", fix=f"add {key}: <value> under benchmarks.{name}")
    for field, dname in _dataset_refs(name, bench):
        dataset_classes(config, dname, field)
    if kind == "dataset_sequence":
        return
    # Domain-incremental scenarios (permuted, rotated) hold out classes and read class_order as the class split does.
    dataset = bench["dataset"]
    n_classes = dataset_classes(config, dataset, (*where, "dataset"))
    holdout = int(bench.get("holdout_classes", 0))
    if holdout >= n_classes:
        raise ConfigError(f"holding out {holdout} classes leaves none of the {n_classes} classes of '{dataset}' "
                          "to train on", path=(*where, "holdout_classes"), value=holdout,
                          allowed=f"an integer in [0, {n_classes - 1}]", fix="lower holdout_classes")
    trained = n_classes - holdout
    if kind in ("class_incremental", "task_incremental") and trained % bench["n_tasks"]:
        valid = [k for k in range(1, trained + 1) if trained % k == 0]
        held = f" ({n_classes} minus holdout_classes {holdout})" if holdout else ""
        raise ConfigError(
            f"does not split the {trained} trained classes of '{dataset}'{held} into equal tasks",
            path=(*where, "n_tasks"), value=bench["n_tasks"], allowed=f"a divisor of {trained}: {choices(valid)}",
            fix="set n_tasks to one of the allowed values" + (", or change holdout_classes" if holdout else ""))
    order = bench.get("class_order", "sorted")
    if isinstance(order, list) and sorted(order) != list(range(n_classes)):
        missing = sorted(set(range(n_classes)) - set(order))
        repeated = sorted({c for c in order if order.count(c) > 1})
        outside = sorted({c for c in order if c >= n_classes})
        details = "; ".join(text for text in (
            f"missing {_ids(missing)}" if missing else "", f"repeated {_ids(repeated)}" if repeated else "",
            f"not classes of '{dataset}': {_ids(outside)}" if outside else "") if text)
        raise ConfigError(f"not a permutation of the {n_classes} classes of '{dataset}' ({details})",
                          path=(*where, "class_order"), value=order,
                          allowed=f"sorted, random, or a list of every class id 0..{n_classes - 1} exactly once",
                          fix="list each class id once, or use class_order: random (drawn with scenario_seed)")


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:12])) + (", ..." if len(ids) > 12 else "")


def _check_dataset_files(config: dict[str, Any]) -> None:
    """The files and folders a used dataset is imported from exist (a folder only until it has been prepared)."""
    used = [d for b in config["benchmarks"] for d in datasets_of(config, b)]
    used += [name for run in config["methods"] for name in method_datasets(config, run)]
    for name in dict.fromkeys(n for n in used if n):
        options = config.get("datasets", {}).get(name, {})
        info = DATASETS.get(name)
        prepared = os.path.exists(PREPARED_DATASET.format(dataset=name))
        for key, what in (("npz", "file"), ("path", "folder")):
            location = options.get(key)
            if location is not None and os.path.exists(location):
                wrong = os.path.isdir(location) if key == "npz" else not os.path.isdir(location)
                if wrong and not (key == "path" and prepared):
                    raise ConfigError(
                        f"{location} is a folder, not an array file" if key == "npz"
                        else f"{location} is a file, not a folder",
                        path=("datasets", name, key), value=location,
                        allowed="an .npz file (x_train, y_train, x_test, y_test)" if key == "npz"
                        else "a folder in the dataset's raw layout (ImageNet: train/ and val/ of class folders)",
                        fix=f"point datasets.{name}.{key} at the {what}" + (
                            ", or use npz: for an array file" if key == "path" else ", or use path: for a raw folder"))
                continue
            if location is None:
                continue
            if key == "path" and prepared:
                continue  # prepared already: the raw folder is read only to prepare it
            if info is not None and info.no_download:
                fix = f"correct datasets.{name}.{key}; {info.no_download}"
            elif info is not None and info.url:
                fix = f"correct datasets.{name}.{key}, or remove it to download {name} ({info.url})"
            elif info is not None:
                fix = f"correct datasets.{name}.{key}, or remove it to use the registered source"
            else:
                fix = f"correct datasets.{name}.{key}"
            relative = "" if os.path.isabs(location) else f" (relative to {os.getcwd()})"
            raise ConfigError(f"no such {what}: {location}{relative}", path=("datasets", name, key), value=location,
                              allowed=f"an existing {what}, absolute or relative to the folder snakemake runs in",
                              fix=fix)


def _param_path(config: dict[str, Any], run_name: str, part: str, key: str, benchmark: str | None = None) -> tuple:
    """The field a user wrote a run's parameter (part "params") or training setting (part "train") in.

    A sweep's point comes from ``sweeps.<base>.<part>.<key>[i]``, a variant's setting from
    ``variants.<name>.<part>.<key>``, anything else from ``method_params`` or the benchmark's ``train``.
    """
    variants = config.get("variants") or {}
    variant = variants.get(run_name)
    method = variant["method"] if variant else run_name
    default = (("method_params", method, key) if part == "params"
               else ("benchmarks", benchmark or next(iter(config["benchmarks"])), "train", key))
    if variant is None:
        return default
    sweep = variant.get("sweep")
    if sweep:
        swept = ((config.get("sweeps") or {}).get(sweep["base"]) or {}).get(part) or {}
        if key in swept:
            value = (variant.get(part) or {}).get(key)
            index = next((i for i, v in enumerate(swept[key]) if v == value and type(v) is type(value)), None)
            return ("sweeps", sweep["base"], part, key) + ((index,) if index is not None else ())
        run_name = sweep["base"]
        variant = variants.get(run_name)
        if variant is None:
            return default
    if key in (variant.get(part) or {}):
        return ("variants", run_name, part, key)
    return default


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
            raise ConfigError(f"'{base}' is not a run in methods{did_you_mean(base, config['methods'])}",
                              path=("sweeps", base), value=sweep, allowed="runs in methods: " + choices(config["methods"]),
                              kind="unknown_key", fix=f"add {base} to methods, or remove the sweep")
        variant = variants.get(base, {"method": base} if base in registered else None)
        if variant is None:
            raise ConfigError(f"'{base}' is neither a registered method nor a variant",
                              path=("sweeps", base), value=sweep, kind="unknown_key",
                              allowed="a registered method (" + choices(registered) + ") or a variant defined under "
                              "variants", fix=f"define {base} under variants, or sweep a registered method")
        method = variant["method"]
        known = sorted(config["method_params"][method])
        for key in sweep.get("params", {}):
            if key not in known:
                raise ConfigError(f"{method} has no hyperparameter '{key}'{did_you_mean(key, known)}",
                                  path=("sweeps", base, "params", key), value=sweep["params"][key],
                                  allowed="hyperparameters of " + method + ": " + choices(known),
                                  describe_as=("method_params", method), kind="unknown_key",
                                  fix="sweep one of the allowed hyperparameters (training settings go under train)")
        axes = [("params", k, v) for k, v in sorted(sweep.get("params", {}).items())]
        axes += [("train", k, v) for k, v in sorted(sweep.get("train", {}).items())]
        for part, key, values in axes:
            spelled = [sweep_value(v) for v in values]
            unnamable = next((j for j, text in enumerate(spelled) if not re.fullmatch(r"[A-Za-z0-9_.+-]+", text)), None)
            if unnamable is not None:
                raise ConfigError(
                    f"a swept value is spelled into the run's name and folder ({base}~{key}=...), and "
                    f"{spelled[unnamable]!r} cannot be", path=("sweeps", base, part, key, unnamable),
                    value=values[unnamable], allowed="numbers, true/false, null, or words of letters, digits and "
                    "_ . + - (no lists, spaces, commas, slashes)",
                    fix=f"define one variant per value under variants (e.g. {base}_{unnamable}: {{method: ..., "
                        f"{part}: {{{key}: ...}}}}) and list them in methods")
            repeated = next((j for j, text in enumerate(spelled) if text in spelled[:j]), None)
            if repeated is not None:
                raise ConfigError(
                    f"the value {spelled[repeated]} is swept twice (items {spelled.index(spelled[repeated])} and "
                    f"{repeated}), so two runs would share the name and folder of "
                    f"{base}~...{key}={spelled[repeated]}", path=("sweeps", base, part, key, repeated),
                    value=values[repeated], allowed="each value once per list (1 and 1.0 are the same value)",
                    fix="remove the repeated value")
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
            raise ConfigError(f"a variant named after the registered method '{name}' must use that method",
                              path=("variants", name, "method"), value=variants[name]["method"], allowed=name,
                              fix=f"rename the variant (e.g. {name}_{variants[name]['method']}), or set method: {name}")
    for i, name in enumerate(config["methods"]):
        if name not in registered and name not in variants:
            raise ConfigError(f"unknown method '{name}'{did_you_mean(name, [*registered, *variants])}",
                              path=("methods", i), value=name,
                              allowed="a registered method (" + choices(registered) + ") or a variant defined under "
                              f"variants ({choices(sorted(variants)) or 'none defined'})",
                              fix=f"correct the name, or define it: variants: {{{name}: {{method: <registered method>, "
                                  "params: {...}}}")
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
        except ConfigError as err:
            raise _in_variant(config, name, err) from None
        except Exception as err:  # another validator (snakemake.utils.validate): its own message
            raise ConfigError(f"{variant['method']} rejects these settings: {err}", path=("variants", name),
                              value=variant) from None
        variant["resolved_params"] = trial["method_params"][variant["method"]]


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


def _in_variant(config: dict[str, Any], name: str, err: ConfigError) -> ConfigError:
    """Point an error found in a variant's trial config at the field the user wrote (variant, sweep point)."""
    parts = err.parts
    if parts[:2] == ("method_params", config["variants"][name]["method"]) and len(parts) > 2:
        part, key, rest = "params", parts[2], parts[3:]
    elif len(parts) > 3 and parts[0] == "benchmarks" and parts[2] == "train":
        part, key, rest = "train", parts[3], parts[4:]
    else:
        return err
    path = _param_path(config, name, part, str(key), parts[1] if part == "train" else None)
    if err.kind == "unknown_key" and isinstance(path[-1], int):
        path = path[:-1]  # an unknown key is wrong in every point of the sweep
    container = field_path(parts[:2] if part == "params" else parts[:3])
    err.problem = err.problem.replace(f" in {container}", " in " + (
        f"{config['variants'][name]['method']}'s hyperparameters" if part == "params" else "the training settings"))
    err.parts = (*path, *rest)
    if get_path(config, err.parts) is not MISSING:
        err.value = get_path(config, err.parts)  # what the user wrote there (a sweep's whole list of values)
    return err


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
    if method_catalog.fact(method_name, "feature_cache_unsupported"):  # it needs the backbone itself
        return False
    backbone_cfg = config["backbones"][backbone]
    return params.get("freeze", "none") == "all" or archs.get(backbone_cfg["arch"]).frozen(backbone_cfg)


def backbone_is_seeded(backbone_cfg: dict[str, Any]) -> bool:
    """Whether a backbone's initial weights depend on the seed (random init) or come from pretrained weights."""
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
    # Training settings do not change the task splits, so they stay out of the scenario's spec; how tasks are
    # grouped into jobs changes no number at all.
    return {k: v for k, v in bench.items() if k not in ("train", "tasks_per_job")}
