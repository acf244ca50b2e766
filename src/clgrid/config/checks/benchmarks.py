"""Plan-time checks of a benchmark: its datasets, task count, held-out classes and class order against its
scenario, scenario options the scenario reads the way the user meant (and none it ignores), input shapes, eval
sets and transforms."""

from __future__ import annotations

from typing import Any

from clgrid.config.checks.datasets import dataset_shape
from clgrid.config.checks.ignored import _ignored
from clgrid.config.errors import ConfigError, choices, show
from clgrid.config.grid import dataset_classes, datasets_of


DOMAIN = ("permuted", "rotated")


EVAL_SET_RESERVED = ("task_il", "top5")
"""Eval-set names whose record keys (``acc_<name>``) collide with the evaluation's own (``acc_task_il``, and
``acc_matrix_top5`` in metrics.json; clgrid.jobs): the set's numbers would overwrite them."""


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


def check_benchmark(config: dict[str, Any], name: str, bench: dict[str, Any]) -> None:
    """Scenario options the scenario reads the way the user meant, and none it ignores."""
    where = ("benchmarks", name)
    kind = bench["scenario"]
    n_tasks = int(bench["n_tasks"])
    if kind == "dataset_sequence":
        for key, default in (("holdout_classes", 0), ("class_order", "sorted")):
            if bench.get(key, default) != default:
                raise _ignored((*where, key), bench[key], f"a dataset_sequence ignores {key} (each task is a whole "
                               "dataset)", f"{show(default)} or leave it out",
                               f"remove {key}, or use a class_incremental benchmark of one dataset")
        if "dataset" in bench:
            raise _ignored((*where, "dataset"), bench["dataset"], "a dataset_sequence reads its datasets from "
                           "datasets; dataset is ignored", "leave dataset out", "remove dataset (list every task's "
                           "dataset under datasets)")
    else:
        if "datasets" in bench:
            raise _ignored((*where, "datasets"), bench["datasets"], f"scenario {kind} splits the one dataset under "
                           "dataset; datasets (one per task) is read only by a dataset_sequence",
                           "leave datasets out", "remove datasets, or set scenario: dataset_sequence")
        if bench.get("label_space", "disjoint") != "disjoint":
            raise _ignored((*where, "label_space"), bench["label_space"], f"scenario {kind} has one dataset and one "
                           "label space; label_space is read only by a dataset_sequence", "disjoint or leave it out",
                           "remove label_space")
    if kind != "rotated":
        if "angles" in bench:
            raise _ignored((*where, "angles"), bench["angles"], f"scenario {kind} ignores angles (a rotated "
                           "scenario's)", "leave angles out", "remove angles, or set scenario: rotated")
        if bench.get("max_angle", 180) != 180:
            raise _ignored((*where, "max_angle"), bench["max_angle"], f"scenario {kind} ignores max_angle (a rotated "
                           "scenario's)", "180 or leave it out", "remove max_angle, or set scenario: rotated")
    elif "angles" in bench:
        if len(bench["angles"]) != n_tasks:
            raise ConfigError(f"{len(bench['angles'])} angles for {n_tasks} tasks"
                              + (" (an empty list would silently mean random angles)" if not bench["angles"] else ""),
                              path=(*where, "angles"), value=bench["angles"],
                              allowed=f"a list of {n_tasks} angles in degrees, one per task (task 0 first), or "
                                      "leave angles out for task 0 upright and the others drawn in [0, max_angle)",
                              fix=f"give {n_tasks} angles, or change n_tasks to {len(bench['angles'])}"
                              if bench["angles"] else f"give {n_tasks} angles, or remove angles")
        if bench.get("max_angle", 180) != 180:
            raise _ignored((*where, "max_angle"), bench["max_angle"], "max_angle bounds the drawn angles; with "
                           "angles given, none is drawn", "180 or leave it out when angles are given",
                           "remove max_angle, or remove angles to draw them")
    if kind in DOMAIN and bench.get("class_order", "sorted") != "sorted" and not bench.get("holdout_classes"):
        raise _ignored((*where, "class_order"), bench["class_order"], f"in a {kind} scenario every task holds every "
                       "class; class_order only chooses the held-out classes, and holdout_classes is 0"
                       + (" (random also changes the drawn transforms)" if bench["class_order"] == "random" else ""),
                       "sorted, or leave it out (unless holdout_classes > 0)",
                       "remove class_order, or set holdout_classes")
    _check_input_shapes(config, name, bench)
    _check_eval_sets(config, name, bench)
    _check_transform(config, name, bench)
    _check_validation(config, name, bench)


def _check_input_shapes(config: dict[str, Any], name: str, bench: dict[str, Any]) -> None:
    """A dataset sequence of different image sizes needs image_size (clgrid.data.scenarios.input_shape_of)."""
    if bench["scenario"] != "dataset_sequence" or bench.get("image_size"):
        return
    shapes = {d: dataset_shape(config, d) for d in bench["datasets"]}
    if any(s is None for s in shapes.values()):
        return
    first = next(iter(shapes.values()))
    differ = {d: s for d, s in shapes.items() if s[1:] != first[1:]}
    if not differ and not bench.get("channels") and any(s[0] != first[0] for s in shapes.values()):
        counts = ", ".join(f"{d} {s[0]}" for d, s in shapes.items())
        raise ConfigError(f"the datasets have different channel counts ({counts}), and the benchmark sets no "
                          "channels to convert every task to one (prepare_scenario refuses different input shapes)",
                          path=("benchmarks", name, "channels"), kind="missing", allowed="1 or 3",
                          fix=f"add channels: 3 under benchmarks.{name} (grey images become RGB)")
    if differ:
        sizes = ", ".join(f"{d} {s[1]}x{s[2]}" for d, s in shapes.items())
        raise ConfigError(f"the datasets have different image sizes ({sizes}), and the benchmark sets no image_size "
                          "to resize every task to one", path=("benchmarks", name, "image_size"), kind="missing",
                          allowed="an integer >= 4 (every task resized to it), e.g. the largest: "
                                  f"{max(s[1] for s in shapes.values())}",
                          fix=f"add image_size: <pixels> (and channels: 3 to mix grey and RGB) under "
                              f"benchmarks.{name}, or give each dataset the same image_size under datasets")


def _check_eval_sets(config: dict[str, Any], name: str, bench: dict[str, Any]) -> None:
    sets = bench.get("eval_sets") or {}
    trained = bench["datasets"] if bench["scenario"] == "dataset_sequence" else [bench["dataset"]]
    for set_name, set_cfg in sets.items():
        where = ("benchmarks", name, "eval_sets", set_name)
        if set_name in EVAL_SET_RESERVED or set_name.endswith("_task_il"):
            raise ConfigError(f"its accuracy would be recorded as acc_{set_name}, a name the evaluation uses itself "
                              "(or, for *_task_il, never summarises): the numbers would be overwritten or dropped",
                              path=where, value=set_cfg, kind="bad_name",
                              allowed="a name other than task_il and top5, not ending in _task_il",
                              fix=f"rename the eval set (e.g. {set_name.removesuffix('_task_il')}_set)")
        n_set = dataset_classes(config, set_cfg["dataset"], (*where, "dataset"))
        for dname in dict.fromkeys(trained):
            n_task = dataset_classes(config, dname)
            if n_set != n_task:
                raise ConfigError(f"'{set_cfg['dataset']}' has {n_set} classes and '{dname}' {n_task}: an eval set "
                                  "is split by the tasks' class ids, so its labels must mean the same classes",
                                  path=(*where, "dataset"), value=set_cfg["dataset"],
                                  allowed=f"a dataset with the same {n_task} classes as '{dname}' (e.g. a shifted "
                                          "test set of it)", fix="use a test set of the same classes")


def _check_transform(config: dict[str, Any], name: str, bench: dict[str, Any]) -> None:
    where = ("benchmarks", name, "transform")
    transform = bench.get("transform") or {}
    if transform.get("crop_padding", 4) != 4 and transform.get("augment", "none") not in ("crop", "crop_flip"):
        raise _ignored((*where, "crop_padding"), transform["crop_padding"],
                       f"crop_padding pads the random crop; augment {transform.get('augment', 'none')} crops nothing",
                       "4 or leave it out unless augment is crop or crop_flip",
                       "remove crop_padding, or set augment: crop_flip (or crop)")
    normalize = transform.get("normalize")
    if not isinstance(normalize, dict):
        return
    mean, std = normalize["mean"], normalize["std"]
    if len(mean) != len(std):
        raise ConfigError(f"{len(mean)} means and {len(std)} standard deviations", path=(*where, "normalize", "std"),
                          value=std, allowed=f"{len(mean)} numbers, one per channel as in mean",
                          fix="give one mean and one std per input channel")
    shapes = [dataset_shape(config, d) for d in datasets_of(config, name)[:1]]
    channels = bench.get("channels") or (shapes[0][0] if shapes and shapes[0] else None)
    if channels and len(mean) not in (1, channels):
        plural = "s" if channels > 1 else ""
        raise ConfigError(f"the inputs have {channels} channel{plural}, and mean lists {len(mean)}",
                          path=(*where, "normalize", "mean"), value=mean,
                          allowed="1 number (one channel)" if channels == 1 else
                          f"{channels} numbers (one per channel), or 1 for all channels",
                          fix=f"give {channels} mean{plural} and std{plural}, or normalize: auto")


def _check_validation(config: dict[str, Any], name: str, bench: dict[str, Any]) -> None:
    """A validation fraction that would set aside every training sample of a class: known before preparation where
    a dataset keeps ``max_per_class_train`` samples per class (the scenario job checks the real counts)."""
    fraction = (bench.get("validation") or {}).get("fraction")
    if fraction is None:
        return
    trained = bench["datasets"] if bench["scenario"] == "dataset_sequence" else [bench["dataset"]]
    for dname in dict.fromkeys(trained):
        per_class = ((config.get("datasets") or {}).get(dname) or {}).get("max_per_class_train")
        if per_class and max(1, round(fraction * per_class)) >= per_class:
            raise ConfigError(f"'{dname}' keeps {per_class} training sample(s) per class (datasets.{dname}."
                              f"max_per_class_train), and a fraction of {fraction} sets aside "
                              f"{max(1, round(fraction * per_class))} of them (at least 1): no training sample of "
                              "any class would be left", path=("benchmarks", name, "validation", "fraction"),
                              value=fraction, allowed=f"a fraction in (0, 0.5] that leaves a class of {per_class} "
                              "samples at least one", fix=f"raise datasets.{dname}.max_per_class_train to 2 or more, "
                              "or remove validation")
