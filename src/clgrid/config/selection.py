"""Selection studies: a sweep whose winner is chosen on validation data inside the DAG, then run on the test sets.

``sweeps: {ewc: {params: {ewc_lambda: [1, 10, 100]}, select: {protocol: whole_stream}}}`` replaces the run ``ewc``
by three kinds of runs, all ordinary runs of the grid (the ordinary rules train them):

- *candidates* ``ewc~val~ewc_lambda=10`` (whole stream) or ``ewc~first2~ewc_lambda=10`` (first k tasks): evaluated
  on the benchmark's validation splits only (``RunSpec.evaluate_on``), so no job a selection reads ever opens a test
  array; trained on every task, or on the first k;
- the *selection* (the ``select_hyperparameters`` checkpoint): reads the candidates' validation metrics and writes
  the chosen values with every candidate's score (``clgrid.selection``);
- the *final run* ``ewc~selected``: the base run with the chosen values, trained on every task with the study's
  seeds and evaluated on the test sets as usual; its jobs read the chosen values from the selection's file, which
  is their input (so a new choice reruns them) and their provenance records;
- with ``test_rows: true``, every candidate value also run on the test sets (``ewc~test~ewc_lambda=10``): what
  picking the best test row would have reported, shown beside the selected run (never read by the selection).

The per-task protocol (FACIL) chooses per task and per seed (``clgrid.selection.per_task``): learning-rate
candidates ``ewc~pt~lr=0.01`` fine-tune the chosen state of the task before with the stability weight at 0 (the
plasticity), stability candidates ``ewc~pt~ewc_lambda=50`` train with the chosen learning rate and the weight halved
from its start; the final run adopts the chosen candidate's state of every task and evaluates it on the test sets.

Candidates and test rows are not in ``config["methods"]`` (so not in the main tables or figures): they are listed
by ``candidate_runs``; the final run takes the base run's place in ``methods``.
"""

from __future__ import annotations

from typing import Any

from clgrid import paths

PROTOCOLS = ("whole_stream", "first_k", "per_task")
SELECTED = "selected"


def candidate_name(base: str, protocol: str, k: int | None, point: str) -> str:
    """``ewc~val~ewc_lambda=10`` (whole stream), ``ewc~first2~ewc_lambda=10`` (first k), ``ewc~pt~lr=0.01``."""
    tag = {"whole_stream": "val", "first_k": f"first{k}", "per_task": "pt"}[protocol]
    return f"{base}~{tag}~{point}"


def final_name(base: str) -> str:
    return f"{base}~{SELECTED}"


def test_row_name(base: str, point: str) -> str:
    return f"{base}~test~{point}"


def selection_of(config: dict[str, Any], run_name: str) -> dict[str, Any] | None:
    """The ``selection`` record of a run made by a selection study (role candidate, final or test_row), or None."""
    variant = (config.get("variants") or {}).get(run_name)
    return None if variant is None else variant.get("selection")


def role(config: dict[str, Any], run_name: str) -> str | None:
    record = selection_of(config, run_name)
    return None if record is None else record["role"]


def is_per_task_candidate(config: dict[str, Any], run_name: str) -> bool:
    """A candidate of FACIL's per-task protocol: trained a task per job, chosen from by its evaluations, so it has
    no metrics.json."""
    record = selection_of(config, run_name) or {}
    return record.get("role") == "candidate" and record.get("protocol") == "per_task"


def finals(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Final run name -> its selection record (base, protocol, metric, candidates, ...), in config order."""
    return {name: v["selection"] for name, v in (config.get("variants") or {}).items()
            if (v.get("selection") or {}).get("role") == "final"}


def candidate_seeds(config: dict[str, Any], final: str) -> list[int]:
    """The seeds a selection's candidates run with (``select.seeds``, default the study's seeds)."""
    return [int(s) for s in finals(config)[final].get("seeds") or config["seeds"]]


def candidate_runs(config: dict[str, Any]) -> list:
    """Every candidate and test-row run of every selection: the runs the DAG builds besides ``runs(config)``."""
    from clgrid.config.grid import Run, cells, in_grid

    out = []
    for final, record in finals(config).items():
        seeds = candidate_seeds(config, final)
        for benchmark, backbone in cells(config):
            if not in_grid(config, benchmark, backbone, final):
                continue
            for name in record["candidates"]:
                out += [Run(benchmark, backbone, name, seed) for seed in seeds]
            for name in record.get("test_rows", []):
                out += [Run(benchmark, backbone, name, int(seed)) for seed in config["seeds"]]
    return out


def selection_file(benchmark: str, backbone: str, base: str) -> str:
    return paths.SELECTION.format(benchmark=benchmark, backbone=backbone, base=base)


def selection_files(config: dict[str, Any]) -> list[str]:
    """The whole-stream and first-k selections' files of every cell."""
    from clgrid.config.grid import cells, in_grid

    return [selection_file(b, bb, record["base"]) for final, record in finals(config).items()
            if record["protocol"] != "per_task" for b, bb in cells(config) if in_grid(config, b, bb, final)]


def per_task_file(benchmark: str, backbone: str, base: str, seed: int | str, task: int | str, stage: str) -> str:
    return paths.TASK_SELECTION.format(benchmark=benchmark, backbone=backbone, base=base, seed=seed, task=task,
                                       stage=stage)


def run_tasks(config: dict[str, Any], benchmark: str, run_name: str) -> int:
    """How many tasks a run trains: k for a first-k candidate, every task of the benchmark otherwise."""
    from clgrid.config.grid import n_tasks

    record = selection_of(config, run_name)
    if record and record["role"] == "candidate" and record["protocol"] == "first_k":
        return int(record["k"])
    return n_tasks(config, benchmark)


def spec_fields(config: dict[str, Any], benchmark: str, backbone: str, run_name: str, seed: int) -> dict[str, Any]:
    """What a selection study's run adds to its run spec: a candidate is evaluated on validation data only and
    carries its selection record; a final run names the file its chosen values come from."""
    record = selection_of(config, run_name)
    if record is None or record["role"] == "test_row":
        return {}
    if record["role"] == "candidate":
        fields = {"evaluate_on": "validation",
                  "selection": {k: v for k, v in record.items() if k in ("role", "base", "protocol", "k", "stage",
                                                                         "values")}}
        if record["protocol"] == "per_task" and record["stage"] == "stability":
            fields["selection"]["lr_from"] = per_task_file(benchmark, backbone, record["base"], seed, "{task}",
                                                           "plasticity")
        return fields
    selection = {"role": "final", "base": record["base"], "protocol": record["protocol"]}
    if record["protocol"] == "per_task":
        selection["stability_key"] = record["stability_key"]
    else:
        selection["file"] = selection_file(benchmark, backbone, record["base"])
    if record["protocol"] == "first_k":
        selection["k"] = int(record["k"])
    return {"selection": selection}


def expand(config: dict[str, Any], base: str, variant: dict[str, Any], points: list[tuple[str, dict, dict, dict]],
           select: dict[str, Any]) -> list[str]:
    """The runs a sweep with ``select`` makes in place of ``base``: its candidates and test rows as variants outside
    ``methods``, and the final run, returned to take ``base``'s place in ``methods``.

    ``points``: the sweep's grid as (spelled point, swept values, params, train) in the sweep's order."""
    variants = config["variants"]
    protocol = select["protocol"]
    k = select.get("k")
    record = {"role": "final", "base": base, "protocol": protocol, "metric": select.get("metric", "acc"),
              "seeds": select.get("seeds"), "candidates": [], "test_rows": []}
    if protocol == "first_k":
        record["k"] = int(k)
    if protocol == "per_task":
        record.update(_per_task_candidates(config, base, variant, points, select))
    else:
        for point, values, params, train in points:
            name = candidate_name(base, protocol, k, point)
            variants[name] = {"method": variant["method"], "params": params, "train": train,
                              "selection": {"role": "candidate", "base": base, "protocol": protocol, "values": values,
                                            **({"k": int(k)} if protocol == "first_k" else {})}}
            record["candidates"].append(name)
    if select.get("test_rows"):
        for point, values, params, train in points:
            name = test_row_name(base, point)
            variants[name] = {"method": variant["method"], "params": params, "train": train,
                              "selection": {"role": "test_row", "base": base, "values": values}}
            record["test_rows"].append(name)
    final = final_name(base)
    variants[final] = {"method": variant["method"], "params": dict(variant.get("params", {})),
                       "train": dict(variant.get("train", {})), "selection": record}
    return [final]


def stability_start(config: dict[str, Any], variant: dict[str, Any], select: dict[str, Any]) -> Any:
    """The per-task protocol's first stability weight: ``select.start``, else the variant's value, else the
    method's."""
    stability = select["stability"]
    return select.get("start", variant.get("params", {}).get(
        stability, config["method_params"][variant["method"]].get(stability)))


def _per_task_candidates(config, base, variant, points, select) -> dict[str, Any]:
    """FACIL's candidates: one per learning rate (the stability weight at 0), one per halving of the weight."""
    from clgrid.config.sweeps import sweep_value

    stability_key = select["stability"]
    start = float(stability_start(config, variant, select))
    lrs = [point[3]["lr"] for point in points]
    names = []
    for lr in lrs:
        name = candidate_name(base, "per_task", None, f"lr={sweep_value(lr)}")
        config["variants"][name] = {
            "method": variant["method"], "params": {**variant.get("params", {}), stability_key: 0.0},
            "train": {**variant.get("train", {}), "lr": lr},
            "selection": {"role": "candidate", "base": base, "protocol": "per_task", "stage": "plasticity",
                          "values": {"lr": lr}}}
        names.append(name)
    weights = [start / 2**j for j in range(int(select.get("halvings", 4)) + 1)]
    stability = []
    for weight in weights:
        name = candidate_name(base, "per_task", None, f"{stability_key}={sweep_value(weight)}")
        config["variants"][name] = {
            "method": variant["method"], "params": {**variant.get("params", {}), stability_key: weight},
            "train": dict(variant.get("train", {})),
            "selection": {"role": "candidate", "base": base, "protocol": "per_task", "stage": "stability",
                          "values": {stability_key: weight}}}
        stability.append(name)
    return {"candidates": names + stability, "plasticity_candidates": names, "stability_candidates": stability,
            "stability_key": stability_key, "fraction": float(select.get("fraction", 0.8)), "lrs": lrs,
            "weights": weights}


def check_select(config: dict[str, Any], base: str, variant: dict[str, Any], sweep: dict[str, Any]) -> None:
    """What the schema cannot say about a sweep's ``select``: validation splits on its benchmarks, k within the
    tasks, a metric the validation matrices give, and the per-task protocol's learning rates and stability weight."""
    from clgrid.catalog import metrics as metric_catalog
    from clgrid.config.errors import ConfigError, choices, did_you_mean
    from clgrid.config.grid import in_grid, n_tasks

    select = sweep["select"]
    where = ("sweeps", base, "select")
    benchmarks = [b for b in config["benchmarks"] if any(in_grid(config, b, bb, base) for bb in config["backbones"])]
    for benchmark in benchmarks:
        if not config["benchmarks"][benchmark].get("validation"):
            raise ConfigError(f"chooses {base}'s values on validation data, but the benchmark '{benchmark}' sets none "
                              "aside", path=where, value=select, allowed="a benchmark with validation: {fraction: f}",
                              fix=f"add validation: {{fraction: 0.1}} to benchmarks.{benchmark} (10% of each class's "
                                  "training samples of every task, never trained on)")
    metric = select.get("metric", "acc")
    allowed = [name for name, m in metric_catalog.METRICS.items() if m.group in ("run", "task_il")]
    if metric not in allowed:
        raise ConfigError(f"'{metric}' is not a metric of a validation accuracy matrix{did_you_mean(metric, allowed)}",
                          path=(*where, "metric"), value=metric, allowed=choices(allowed),
                          fix="choose by acc (final average accuracy, the default) or another listed metric")
    protocol = select["protocol"]
    if protocol == "first_k":
        if "k" not in select:
            raise ConfigError("the first-k protocol needs k, the number of tasks the candidates train",
                              path=where, value=select, allowed="an integer 1 <= k < the benchmark's task count",
                              fix="add k: 1 (Chaudhry et al. 2019 tune on the first task or few)")
        for benchmark in benchmarks:
            if not 1 <= int(select["k"]) < n_tasks(config, benchmark):
                raise ConfigError(f"k={select['k']} leaves no task of '{benchmark}' ({n_tasks(config, benchmark)} "
                                  "tasks) to report on after the selection", path=(*where, "k"), value=select["k"],
                                  allowed=f"1 .. {n_tasks(config, benchmark) - 1}",
                                  fix="choose on fewer tasks than the benchmark has")
    elif "k" in select:
        raise ConfigError(f"k is a setting of the first_k protocol, not of {protocol}", path=(*where, "k"),
                          value=select["k"], allowed="k only with protocol: first_k", fix="remove k")
    per_task_keys = ("stability", "start", "halvings", "fraction")
    if protocol != "per_task":
        extra = [key for key in per_task_keys if key in select]
        if extra:
            raise ConfigError(f"{extra[0]} is a setting of the per_task protocol, not of {protocol}",
                              path=(*where, extra[0]), value=select[extra[0]], allowed="only with protocol: per_task",
                              fix=f"remove {extra[0]}, or use protocol: per_task")
        return
    swept = {part: sorted(sweep.get(part) or {}) for part in ("params", "train")}
    if swept != {"params": [], "train": ["lr"]}:
        raise ConfigError("the per-task protocol sweeps the learning rate (its plasticity search) and halves the "
                          "stability weight itself", path=("sweeps", base), value={k: v for k, v in sweep.items()
                                                                                    if k != "select"},
                          allowed="train: {lr: [...]} and nothing else",
                          fix="sweep train.lr only; name the stability weight in select.stability (its start value in "
                              "select.start or the method's value)")
    known = sorted(config["method_params"][variant["method"]])
    stability = select.get("stability")
    if stability not in known:
        raise ConfigError(f"{variant['method']} has no hyperparameter '{stability}'{did_you_mean(str(stability), known)}",
                          path=(*where, "stability"), value=stability,
                          allowed="the method's stability weight, one of " + choices(known),
                          fix="name the weight the protocol halves (ewc_lambda, si's c, lwf_alpha, ...)")
    start = stability_start(config, variant, select)
    if not isinstance(start, (int, float)) or isinstance(start, bool) or start <= 0:
        raise ConfigError(f"the stability weight {stability} starts at {start!r}, and halving needs a positive number",
                          path=(*where, "start"), value=start, allowed="a number > 0",
                          fix="set select.start (FACIL starts high and halves down)")
