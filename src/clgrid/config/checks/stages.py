"""Checks of runs that start from other runs: ``only`` (which cells of the grid run) and each backbone's
``init_from`` (the source run exists in the grid, its task exists, the two backbones fit, no run starts from
itself through a chain of others)."""

from __future__ import annotations

from typing import Any

from clgrid.config.errors import ConfigError, choices, did_you_mean
from clgrid.config.grid import in_grid, n_tasks


def check_stages(config: dict[str, Any]) -> None:
    _check_only(config)
    edges: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for name, backbone in config["backbones"].items():
        if backbone.get("init_from"):
            for benchmark in config["benchmarks"]:
                if in_grid(config, benchmark, name):
                    edges.setdefault((benchmark, name), set()).add(_check_init_from(config, benchmark, name))
    _check_no_cycle(edges)


def _check_only(config: dict[str, Any]) -> None:
    for benchmark, limits in (config.get("only") or {}).items():
        if benchmark not in config["benchmarks"]:
            raise ConfigError(f"'{benchmark}' is not a benchmark{did_you_mean(benchmark, config['benchmarks'])}",
                              path=("only", benchmark), value=benchmark,
                              allowed="benchmarks: " + choices(config["benchmarks"]),
                              fix="name a benchmark of benchmarks:")
        for key, known in (("backbones", config["backbones"]), ("methods", config["methods"])):
            for i, name in enumerate(limits.get(key, [])):
                if name not in known:
                    raise ConfigError(f"'{name}' is not in {key}{did_you_mean(name, known)}",
                                      path=("only", benchmark, key, i), value=name,
                                      allowed=f"{key}: " + choices(known),
                                      fix=f"name one of {key} (a sweep's runs are named by their values, "
                                          f"e.g. ewc~ewc_lambda=100)" if key == "methods" else f"name one of {key}")


def _check_init_from(config: dict[str, Any], benchmark: str, backbone: str) -> tuple[str, str]:
    """The (benchmark, backbone) whose runs ``backbone`` starts from on ``benchmark``, after checking the source."""
    given = config["backbones"][backbone]["init_from"]
    where = ("backbones", backbone, "init_from")
    source_benchmark = given.get("benchmark", benchmark)
    source_backbone = given.get("backbone", backbone)
    method = given["method"]
    if source_benchmark not in config["benchmarks"]:
        raise ConfigError(f"'{source_benchmark}' is not a benchmark"
                          f"{did_you_mean(source_benchmark, config['benchmarks'])}",
                          path=(*where, "benchmark"), value=source_benchmark,
                          allowed="benchmarks: " + choices(config["benchmarks"]), fix="name a benchmark of benchmarks:")
    if source_backbone not in config["backbones"]:
        raise ConfigError(f"'{source_backbone}' is not a backbone{did_you_mean(source_backbone, config['backbones'])}",
                          path=(*where, "backbone"), value=source_backbone,
                          allowed="backbones: " + choices(config["backbones"]), fix="name a backbone of backbones:")
    if method not in config["methods"]:
        raise ConfigError(f"'{method}' is not a run in methods{did_you_mean(method, config['methods'])}",
                          path=(*where, "method"), value=method, allowed="runs in methods: " + choices(config["methods"]),
                          fix="name a run of methods (a method or a variant)")
    if (source_benchmark, source_backbone) == (benchmark, backbone):
        raise ConfigError(f"backbone {backbone} on {benchmark} would start from its own run",
                          path=(*where, "backbone"), value=source_backbone,
                          allowed="another backbone, or another benchmark (init_from.benchmark)",
                          fix="give the first stage its own backbone entry (same arch and options), or its own "
                              "benchmark, and limit which runs use it with only:")
    if not in_grid(config, source_benchmark, source_backbone, method):
        raise ConfigError(f"the grid has no run {source_benchmark}/{source_backbone}/{method} (only: leaves it out)",
                          path=(*where, "method"), value=method,
                          allowed=f"a run only: keeps on {source_benchmark} with {source_backbone}",
                          fix=f"add it to only.{source_benchmark}")
    task = given.get("task", "last")
    if task != "last" and int(task) >= n_tasks(config, source_benchmark):
        raise ConfigError(f"task {task} does not exist: {source_benchmark} has {n_tasks(config, source_benchmark)} "
                          f"tasks", path=(*where, "task"), value=task,
                          allowed=f"last, or 0..{n_tasks(config, source_benchmark) - 1}", fix="pick an existing task")
    seed = given.get("seed", "same")
    if seed != "same" and seed not in config["seeds"]:
        raise ConfigError(f"seed {seed} is not one of the seeds, so its run does not exist",
                          path=(*where, "seed"), value=seed, allowed="same, or one of seeds: " + choices(config["seeds"]),
                          fix="use same, or a seed of seeds:")
    source_cfg = config["backbones"][source_backbone]
    mine = config["backbones"][backbone]
    if source_cfg["arch"] != mine["arch"]:
        raise ConfigError(f"starts from a {source_cfg['arch']} ({source_backbone}), but is a {mine['arch']}: the "
                          f"weights cannot fit", path=(*where, "backbone"), value=source_backbone,
                          allowed=f"a backbone whose arch is {mine['arch']}",
                          fix=f"give {backbone} the arch and options of {source_backbone}")
    if given.get("head") in ("keep", "reinit") and source_benchmark != benchmark:
        source_classes = _classes(config, source_benchmark)
        own = _classes(config, benchmark)
        if source_classes is not None and own is not None and source_classes != own:
            raise ConfigError(f"head: {given['head']} keeps the head's shape, but {source_benchmark} has "
                              f"{source_classes} classes and {benchmark} {own}",
                              path=(*where, "head"), value=given["head"], allowed="replace (a head for this benchmark)",
                              fix="use head: replace")
    return source_benchmark, source_backbone


def _classes(config: dict[str, Any], benchmark: str) -> int | None:
    """A benchmark's class count when the config fixes it without reading data (one dataset, known classes)."""
    from clgrid.config.grid import dataset_classes

    bench = config["benchmarks"][benchmark]
    if bench["scenario"] == "dataset_sequence":
        return None
    try:
        return dataset_classes(config, bench["dataset"], ("benchmarks", benchmark, "dataset"))
    except ConfigError:
        return None


def _check_no_cycle(edges: dict[tuple[str, str], set[tuple[str, str]]]) -> None:
    """Refuse a chain of init_from that comes back to where it started (the DAG would have a cycle)."""
    done: set[tuple[str, str]] = set()

    def visit(node: tuple[str, str], path: list[tuple[str, str]]) -> None:
        if node in path:
            chain = " -> ".join(f"{b}/{bb}" for b, bb in [*path[path.index(node):], node])
            raise ConfigError(f"init_from goes round in a circle: {chain}",
                              path=("backbones", node[1], "init_from"), value=chain,
                              allowed="a chain of stages that ends at a backbone without init_from",
                              fix="make the first stage a backbone without init_from")
        if node in done:
            return
        for nxt in edges.get(node, ()):
            visit(nxt, [*path, node])
        done.add(node)

    for node in list(edges):
        visit(node, [])
