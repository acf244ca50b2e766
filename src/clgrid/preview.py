"""What a config will cost before it runs: per rule and in total, the jobs, GPU-hours and CPU-hours, the peak
memory of one job, the disk its files take and what it downloads; and a ``budget:`` check on those totals.

The job list comes from the plan (``clgrid.plan.run_plan``, which the Snakemake DAG's input functions follow) for
every run of the grid and every candidate of its selections, each job counted once (jobs shared by runs, such as a
seed's initial model, appear in several plans), training split into jobs as ``tasks_per_job`` splits it
(``clgrid.resources.task_chunks``), plus one analysis per run, the configured cross-run comparisons and the report
jobs (tables, figures, cost tables, paper: counted per cell, as ``final_outputs`` asks for them). Pretrained
weights are a ``download_weights`` job each and a line of the downloads, not disk here (they go to the hubs'
caches). A per-task selection (FACIL's) trains each candidate's task in a job of its own and, per task of a final
run, two choices and an adopted state (``select_plasticity``, ``select_stability``, ``adopt_selected``).

Time per job (no safety factor, unlike ``clgrid.resources``' scheduler limits): training is
``clgrid.resources.task_seconds`` (samples × epochs × the arch's CPU seconds per sample, scaled by pixels, /20 on a
GPU) plus a start-up; an evaluation or a feature extraction is a forward pass (a third of a training step) over
the data; the other jobs are a start-up each (``START_S``). Memory is ``clgrid.resources``' estimate. Disk: a
dataset is its pixels (train and test; uint8, digits' float32), once prepared and, when downloaded, once more for
its raw files, an initial model the arch's parameters × 4 bytes, a task state that and what its method keeps
(``state_bytes``), a feature cache ``FEATURE_DIM`` float32 per sample, and every other job's files ``OTHER_BYTES``.

Calibration (``calibrate``): a finished (or partly finished) results folder and the config that made it give
measured/estimated factors: seconds per estimated training second and a start-up per job of each rule (from the
jobs' ``benchmark:`` files, ``clgrid.cost.read_bench``), CPU seconds per wall second, the model's real size (its
initial models' bytes per estimated byte, per arch) and bytes per estimated byte of each kind of file (from the
files themselves). Pure Python (no torch): the Snakefile imports it for the budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from clgrid import config as cl
from clgrid import paths
from clgrid import plan as cl_plan
from clgrid import resources
from clgrid.config import selection as cl_selection

START_S = 3.0  # a job's Python + torch start-up and its files (uncalibrated)
FORWARD_SHARE = 1.0 / 3.0  # a forward pass costs about a third of a training step (forward + backward)
FEATURE_DIM = 768  # float32 features per sample in a feature cache (uncalibrated: a ViT-B's width)
SAMPLE_LABEL_BYTES = 16  # a stored sample's label and task (int64 each)
OTHER_BYTES = 20_000  # logs, JSON records, sidecars of one job (uncalibrated)
REPORT_BYTES = 1_000_000  # a report job's figures or tables
REPORT_RULES_PER_CELL = ("figures", "analysis_figures", "cost_figure")
REPORT_RULES = ("tables", "cost_tables", "paper")
KINDS = ("datasets", "checkpoints", "features", "other")


@dataclass
class Job:
    rule: str
    gpu: bool
    train_seconds: float  # the per-sample part (training, forward passes) before start-up
    mem_mb: int
    disk: dict[str, float] = field(default_factory=dict)  # bytes by kind (KINDS)


@dataclass
class Calibration:
    """Measured/estimated factors; 1 and the constants above when uncalibrated."""

    train_factor: float = 1.0
    start_s: dict[str, float] = field(default_factory=dict)  # rule -> seconds per job besides its training part
    cpu_per_wall: float = 1.0
    disk_factor: dict[str, float] = field(default_factory=dict)
    # arch -> its initial models' measured bytes / the arch table's parameters × 4: the model's real size, which
    # scales every model-sized tensor of a state but not its stored samples
    weights_factor: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def start(self, rule: str) -> float:
        rule = "train" if rule == "train_per_task_candidate" else rule
        return self.start_s.get(rule, START_S)


@dataclass
class Row:
    rule: str
    jobs: int = 0
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    wall_hours: float = 0.0
    peak_mem_mb: int = 0
    disk: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in KINDS})


# -- the config ----------------------------------------------------------------------------------------------------

def load(configfiles: Iterable[str | Path], schema: str | Path = "workflow/schemas/config.schema.yaml",
         overrides: Mapping[str, Any] | None = None) -> dict:
    """The configs merged as Snakemake merges them (``overrides``: its --config) and checked as the Snakefile
    checks them."""
    return cl.load_configs(list(configfiles), schema, overrides)


# -- the jobs ------------------------------------------------------------------------------------------------------

def _forward_seconds(config: dict[str, Any], benchmark: str, backbone: str, samples: float, gpu: bool) -> float:
    return FORWARD_SHARE * resources._cost_seconds(config, benchmark, backbone, samples, 1, gpu)


def checkpoint_bytes(config: dict[str, Any], backbone: str,
                     weights_factor: Mapping[str, float] | None = None) -> float:
    """One checkpoint: the arch's parameters × 4 bytes (float32), × its calibrated factor (``Calibration``)."""
    arch = config["backbones"][backbone].get("arch", "mlp")
    return resources._arch(config, backbone).parameters * 4 * (weights_factor or {}).get(arch, 1.0)


def state_bytes(config: dict[str, Any], benchmark: str, backbone: str, run_name: str, task: int,
                weights_factor: Mapping[str, float] | None = None) -> float:
    """The state after task ``task``: the model, and what the method keeps beside it (its ``FACTS``).

    - ``state_weights``: that many model-sized tensors, or per task learned. For a backbone the run trains only in
      part (``freeze``, CLIP's ``train_mode``), they cover its trainable part, which the preview does not know:
      not counted there.
    - ``buffer_params`` and ``per_class_buffer_params``: the stored training samples, at most the tasks' training
      data so far, each its pixels as its prepared file holds them (a cached feature's float32 where the run trains
      on the feature cache) and a label;
    - ``reference_params``: reference images (ZSCL's) in the scenario's input shape, as their dataset holds them.
    """
    from clgrid.catalog import archs
    from clgrid.catalog import methods as method_catalog
    from clgrid.data.datasets import pixel_bytes

    method, params, _ = cl.method_of(config, run_name)
    defaults = {key: spec.get("default") for key, spec in method_catalog.catalog()[method].params.items()} \
        if method in method_catalog.catalog() else {}
    params = {**defaults, **params}
    datasets = cl.datasets_of(config, benchmark)
    seen = (task + 1) * resources.task_train_samples(config, benchmark)  # training samples so far
    copies = method_catalog.fact(method, "state_weights", 0)
    if isinstance(copies, dict):
        per_task = copies["per_task"]
        if isinstance(per_task, str):  # a hyperparameter counts them; null: every training sample of the task
            value = params.get(per_task)
            per_task = value if isinstance(value, (int, float)) else seen / (task + 1)
        copies = per_task * (task + 1)
    cfg = config["backbones"][backbone]
    if params.get("freeze", "none") != "none" or archs.get(cfg.get("arch", "mlp")).frozen(cfg):
        copies = 0
    stored = sum(params[key] for key in method_catalog.fact(method, "buffer_params", [])
                 if isinstance(params.get(key), (int, float)))
    per_class = sum(params[key] for key in method_catalog.fact(method, "per_class_buffer_params", [])
                    if isinstance(params.get(key), (int, float)))
    if per_class:  # per class of each task learned: a class split's share of the classes, else all of them
        classes = cl.dataset_classes(config, datasets[0])
        split = config["benchmarks"][benchmark]["scenario"] in ("class_incremental", "task_incremental")
        stored += per_class * (task + 1) * (classes / cl.n_tasks(config, benchmark) if split else classes)
    features = cl.uses_feature_cache(config, benchmark, backbone, run_name)
    pixels = max(resources._image_pixels(config, d) for d in datasets)
    sample = FEATURE_DIM * 4 if features else max(resources._image_pixels(config, d) * pixel_bytes(d)
                                                  for d in datasets)
    references = sum(params[key] for key in method_catalog.fact(method, "reference_params", [])
                     if isinstance(params.get(key), (int, float)))  # in the scenario's input shape
    named = [params[key] for key in method_catalog.fact(method, "dataset_params", []) if params.get(key)]
    reference_pixel = pixel_bytes(named[0] if named else datasets[0])  # null: the first task's own images
    model = checkpoint_bytes(config, backbone, weights_factor)
    samples = min(stored, seen) * (sample + SAMPLE_LABEL_BYTES) + references * pixels * reference_pixel
    return model * (1 + copies) + samples


def dataset_bytes(config: dict[str, Any], name: str) -> float:
    """A prepared dataset: its pixels (uint8; digits' float32), train and test (test at most ``TEST_SIZE_FRACTION``
    of train)."""
    from clgrid.data.datasets import pixel_bytes

    return resources._image_pixels(config, name) * pixel_bytes(name) * resources._train_size(config, name) * (
        1 + resources.TEST_SIZE_FRACTION)


def raw_bytes(config: dict[str, Any], name: str) -> float:
    """A downloaded dataset's raw files: its images at their own size (the registry's input shape, else its default
    image size), whatever size the config prepares them at, uint8, train and test."""
    from clgrid.data.datasets import DATASETS

    info = DATASETS.get(name)
    if info is not None and info.input_shape is not None:
        pixels = math.prod(info.input_shape)
    else:
        side = (info.default_image_size if info else None) or 64
        pixels = 3 * side * side
    return pixels * resources._train_size(config, name) * (1 + resources.TEST_SIZE_FRACTION)


def jobs(config: dict[str, Any], on_cluster: bool = True,
         weights_factor: Mapping[str, float] | None = None) -> list[Job]:
    """Every job of the config, each once (see the module's docstring for what is counted); ``weights_factor``:
    a calibration's real model sizes (``Calibration.weights_factor``)."""
    gpu = resources.wants_gpu(config, on_cluster)
    grid = set(cl.runs(config))
    runs = list(cl.runs(config)) + list(cl_selection.candidate_runs(config))
    seen: set[tuple[str, str]] = set()
    out: list[Job] = []

    def add(key: tuple[str, str], job: Job) -> None:
        if key not in seen:
            seen.add(key)
            out.append(job)

    for run in runs:
        b, bb, m, s = run.benchmark, run.backbone, run.method, run.seed
        mem = resources._mem_mb(config, b, bb)
        ckpt = checkpoint_bytes(config, bb, weights_factor)
        record = cl_selection.selection_of(config, m) or {}
        per_task_role = record.get("role") if record.get("protocol") == "per_task" else None
        for step in cl_plan.run_plan(config, b, bb, m, s):
            outputs = step.outputs
            first = next(iter(outputs.values())) if outputs else step.rule
            key = (step.rule, str(first))
            if step.rule == "prepare_dataset":
                name = Path(first).stem
                add(key, Job("prepare_dataset", False, 0.0, 1000, {"datasets": dataset_bytes(config, name)}))
            elif step.rule == "prepare_scenario":
                add(key, Job("prepare_scenario", False, 0.0, 1000, {"other": OTHER_BYTES}))
            elif step.rule == "download_weights":
                add(key, Job("download_weights", False, 0.0, 1000, {}))
            elif step.rule in ("init_model", "init_model_from_run"):
                add(key, Job(step.rule, gpu, 0.0, mem, {"checkpoints": ckpt, "other": OTHER_BYTES}))
            elif step.rule == "evaluate_init":
                test = resources._train_size(config, cl.datasets_of(config, b)[0]) * resources.TEST_SIZE_FRACTION
                add(key, Job("evaluate_init", gpu, _forward_seconds(config, b, bb, test, gpu), mem,
                             {"other": OTHER_BYTES}))
            elif step.rule == "extract_features":
                samples = sum(resources._train_size(config, d) for d in cl.datasets_of(config, b)) * (
                    1 + resources.TEST_SIZE_FRACTION)
                add(key, Job("extract_features", gpu, _forward_seconds(config, b, bb, samples, gpu), mem,
                             {"features": samples * FEATURE_DIM * 4}))
            elif step.rule == "train" and per_task_role == "final":
                # FACIL's per-task selection: per task, the two choices and the chosen state adopted (no training)
                test = resources._train_size(config, cl.datasets_of(config, b)[0]) * resources.TEST_SIZE_FRACTION
                for t in range(cl.n_tasks(config, b)):
                    where = f"{b}/{bb}/{m}/{s}/{t}"
                    add(("select_plasticity", where), Job("select_plasticity", False, 0.0, 1000,
                                                          {"other": OTHER_BYTES}))
                    add(("select_stability", where), Job("select_stability", False, 0.0, 1000,
                                                         {"other": OTHER_BYTES}))
                    add(("adopt_selected", where),
                        Job("adopt_selected", gpu, _forward_seconds(config, b, bb, test, gpu), mem,
                            {"checkpoints": state_bytes(config, b, bb, m, t, weights_factor), "other": OTHER_BYTES}))
            elif step.rule == "train" and per_task_role == "candidate":
                per_task = resources.task_seconds(config, b, bb, m, gpu)
                for t in range(cl_selection.run_tasks(config, b, m)):  # a job per task: the next starts from a choice
                    add(("train_per_task_candidate", f"{b}/{bb}/{m}/{s}/{t}"),
                        Job("train_per_task_candidate", gpu, per_task, mem,
                            {"checkpoints": state_bytes(config, b, bb, m, t, weights_factor), "other": OTHER_BYTES}))
            elif step.rule == "run_metrics" and per_task_role == "candidate":
                continue  # a per-task candidate has no metrics job: the choices read its evaluations
            elif step.rule == "train":
                per_task = resources.task_seconds(config, b, bb, m, gpu)
                n = cl_selection.run_tasks(config, b, m)
                for first_task, last_task in resources.task_chunks(config, b, on_cluster):
                    if first_task >= n:
                        continue
                    tasks = min(last_task, n - 1) - first_task + 1
                    states = sum(state_bytes(config, b, bb, m, t, weights_factor)
                                 for t in range(first_task, first_task + tasks))
                    add(("train", f"{b}/{bb}/{m}/{s}/{first_task}"),
                        Job("train", gpu, tasks * per_task, mem,
                            {"checkpoints": states, "other": tasks * OTHER_BYTES}))
            elif step.rule == "run_metrics":
                add(key, Job("run_metrics", False, 0.0, 1000, {"other": OTHER_BYTES}))
        if run in grid:
            analysis = resources.analysis(config, b, bb, on_cluster)
            samples = resources._train_size(config, cl.datasets_of(config, b)[0]) * cl.n_tasks(config, b) / 3
            add(("analyze_run", f"{b}/{bb}/{m}/{s}"),
                Job("analyze_run", gpu, _forward_seconds(config, b, bb, samples, gpu), analysis["mem_mb"],
                    {"other": OTHER_BYTES}))
    for kind, name, size in downloads(config):
        if kind == "dataset":  # the raw files in data_root
            out.append(Job("download_dataset", False, 0.0, 1000, {"datasets": size}))
    for b, bb in cl.cells(config):
        for a, o in cl.cross_run_pairs(config):
            if cl.in_grid(config, b, bb, a) and cl.in_grid(config, b, bb, o):
                for s in config["seeds"]:
                    samples = resources._train_size(config, cl.datasets_of(config, b)[0]) * cl.n_tasks(config, b) / 3
                    out.append(Job("compare_runs", gpu, 2 * _forward_seconds(config, b, bb, samples, gpu),
                                   resources._mem_mb(config, b, bb), {"other": OTHER_BYTES}))
        for rule in REPORT_RULES_PER_CELL:
            out.append(Job(rule, False, 0.0, 1000, {"other": REPORT_BYTES}))
    # Selection studies: the candidates' initial evaluation on validation data, one choice per selection file, the
    # report; a sweep's figure per cell.
    finals = cl_selection.finals(config)
    validation = {(r.benchmark, r.backbone, r.seed) for r in cl_selection.candidate_runs(config)
                  if (cl_selection.selection_of(config, r.method) or {}).get("role") == "candidate"
                  and cl_selection.selection_of(config, r.method)["protocol"] != "per_task"}
    for b, bb, s in sorted(validation):
        test = resources._train_size(config, cl.datasets_of(config, b)[0]) * resources.TEST_SIZE_FRACTION
        out.append(Job("evaluate_init_validation", gpu, _forward_seconds(config, b, bb, test, gpu),
                       resources._mem_mb(config, b, bb), {"other": OTHER_BYTES}))
    out += [Job("select_hyperparameters", False, 0.0, 1000, {"other": OTHER_BYTES})
            for _ in cl_selection.selection_files(config)]
    extra = (("published",) if config.get("published") else ()) + (("selection_report",) if finals else ())
    if cl.sweep_points(config):
        out += [Job("sweep_figure", False, 0.0, 1000, {"other": REPORT_BYTES}) for _ in cl.cells(config)]
    for rule in REPORT_RULES + extra:
        out.append(Job(rule, False, 0.0, 1000, {"other": REPORT_BYTES}))
    return out


def downloads(config: dict[str, Any]) -> list[tuple[str, str, float]]:
    """What the config fetches: (kind, name, estimated bytes) for each dataset not imported from a file or folder
    (its raw form about its prepared size) and each backbone with pretrained weights to fetch (parameters × 4)."""
    used = sorted({d for run in cl.runs(config) for d in cl.run_datasets(config, run.benchmark, run.method)})
    out = []
    for name in used:
        options = config.get("datasets", {}).get(name, {})
        if "npz" not in options and "path" not in options and name != "digits":
            out.append(("dataset", name, raw_bytes(config, name)))
    for name, backbone in config["backbones"].items():
        if cl.needs_download(backbone) and any(run.backbone == name for run in cl.runs(config)):
            out.append(("weights", name, checkpoint_bytes(config, name)))
    return out


# -- the estimate --------------------------------------------------------------------------------------------------

def job_wall(job: Job, cal: Calibration) -> float:
    return cal.start(job.rule) + cal.train_factor * job.train_seconds


def estimate(config: dict[str, Any], cal: Calibration | None = None, on_cluster: bool = True) -> dict[str, Row]:
    """Rows per rule and a ``total`` row: jobs, GPU-hours (wall of GPU jobs), CPU-hours (CPU seconds of every job:
    wall × ``cpu_per_wall``), wall-hours (the jobs one after another), the largest memory of one job, disk by kind."""
    cal = cal or Calibration()
    rows: dict[str, Row] = {}
    total = Row("total")
    for job in jobs(config, on_cluster, cal.weights_factor):
        row = rows.setdefault(job.rule, Row(job.rule))
        wall = job_wall(job, cal)
        for r in (row, total):
            r.jobs += 1
            r.wall_hours += wall / 3600
            r.gpu_hours += wall / 3600 if job.gpu else 0.0
            r.cpu_hours += wall * cal.cpu_per_wall / 3600
            r.peak_mem_mb = max(r.peak_mem_mb, job.mem_mb)
            for kind, size in job.disk.items():
                r.disk[kind] += size * cal.disk_factor.get(kind, 1.0)
    rows["total"] = total
    return rows


def disk_total(row: Row) -> float:
    return sum(row.disk.values())


def gb(n: float) -> str:
    return f"{n / 1e9:.3g}"


def render(rows: Mapping[str, Row], fetch: list[tuple[str, str, float]], cal: Calibration | None = None) -> str:
    """The preview as a Markdown table, then the downloads."""
    head = ("| rule | jobs | GPU-h | CPU-h | peak mem/job (MB) | datasets GB | checkpoints GB | features GB | "
            "other GB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for name, r in rows.items():
        label = f"**{name}**" if name == "total" else name
        lines.append(f"| {label} | {r.jobs} | {r.gpu_hours:.3g} | {r.cpu_hours:.3g} | {r.peak_mem_mb} | "
                     + " | ".join(gb(r.disk[k]) for k in KINDS) + " |")
    total = rows["total"]
    lines.append(f"\ntotal disk {gb(disk_total(total))} GB; wall {total.wall_hours:.3g} h with one job at a time")
    if cal and cal.source:
        sizes = "".join(f", {arch} model size ×{f:.3g}" for arch, f in sorted(cal.weights_factor.items()))
        lines.append(f"calibrated on {cal.source}: training ×{cal.train_factor:.3g}, CPU/wall {cal.cpu_per_wall:.3g}"
                     + sizes)
    if fetch:
        lines.append("downloads: " + ", ".join(f"{kind} {name} (~{gb(size)} GB)" for kind, name, size in fetch))
    else:
        lines.append("downloads: none")
    return "\n".join(lines)


# -- budget --------------------------------------------------------------------------------------------------------

BUDGET_FIELDS = {"gpu_hours": lambda r: r.gpu_hours, "cpu_hours": lambda r: r.cpu_hours,
                 "disk_gb": lambda r: disk_total(r) / 1e9}


def over_budget(config: Mapping[str, Any], rows: Mapping[str, Row]) -> list[tuple[str, float, float]]:
    """(field, estimate, limit) for each ``budget`` field the estimate passes."""
    budget = config.get("budget") or {}
    total = rows["total"]
    return [(name, get(total), float(budget[name])) for name, get in BUDGET_FIELDS.items()
            if name in budget and get(total) > float(budget[name])]


def check_budget(config: Mapping[str, Any], rows: Mapping[str, Row] | None = None) -> list[str]:
    """The config's ``budget`` against the estimate: the warnings (``on_exceed: warn``), or a ``ConfigError`` naming
    the first field passed (``on_exceed: stop``). No ``budget``: nothing."""
    budget = config.get("budget")
    if not budget:
        return []
    rows = rows if rows is not None else estimate(dict(config))
    passed = over_budget(config, rows)
    messages = [f"budget.{name}: the estimate is {value:.3g}, over the budget of {limit:g}"
                for name, value, limit in passed]
    if passed and budget.get("on_exceed", "warn") == "stop":
        name, value, limit = passed[0]
        raise cl.ConfigError(f"the config's estimated cost passes its budget ({'; '.join(messages)})",
                             path=["budget", name], value=limit, allowed=f"at least {value:.3g} (the estimate)",
                             fix="raise the budget, shrink the grid (seeds, methods, only:), or set "
                                 "budget.on_exceed: warn; 'clgrid preview' shows where the cost is")
    return messages


# -- calibration ---------------------------------------------------------------------------------------------------

BENCH_RULES = {"init.bench.tsv": "init_model", "eval.bench.tsv": "evaluate_init", "metrics.bench.tsv": "run_metrics",
               "analysis.bench.tsv": "analyze_run"}
TRAIN_BENCH = re.compile(
    r"runs/([^/]+)/([^/]+)/([^/]+)/s(\d+)/(?:train_tasks(\d+)to(\d+)|task(\d+)/train)\.bench\.tsv$")


def bench_rule(path: Path, results: Path) -> str | None:
    """The rule a benchmark file measured: by its name beside the job's outputs, or its folder in benchmarks/."""
    rel = path.relative_to(results).as_posix()
    if TRAIN_BENCH.search(rel):
        return "train"
    if path.name in BENCH_RULES:
        return BENCH_RULES[path.name]
    if rel.startswith("benchmarks/"):
        return rel.split("/")[1].removesuffix(".tsv")
    return path.name.removesuffix(".bench.tsv") if path.name.endswith(".bench.tsv") else None


def measured(results: str | Path) -> dict[str, Any]:
    """What a results folder's jobs took: per rule the jobs, wall and CPU seconds (CPU where measured, with the wall
    of those jobs), and the folder's bytes by kind."""
    from clgrid.cost import read_bench

    results = Path(results)
    per_rule: dict[str, dict[str, float]] = {}
    for path in sorted(results.rglob("*.tsv")):
        if not (path.name.endswith(".bench.tsv") or path.relative_to(results).parts[0] == "benchmarks"):
            continue
        rule = bench_rule(path, results)
        if rule is None:
            continue
        try:
            bench = read_bench(path)
        except ValueError:
            continue
        row = per_rule.setdefault(rule, {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "cpu_wall_s": 0.0})
        row["jobs"] += 1
        row["wall_s"] += bench["wall_s"]
        if not math.isnan(bench["cpu_s"]):
            row["cpu_s"] += bench["cpu_s"]
            row["cpu_wall_s"] += bench["wall_s"]
    return {"rules": per_rule, "disk": disk_by_kind(results)}


def disk_by_kind(results: str | Path) -> dict[str, int]:
    """A results folder's bytes: datasets (data/*.npz), checkpoints (model.pt, state.pt), features, other."""
    out = {k: 0 for k in KINDS}
    for path in Path(results).rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        size = path.stat().st_size
        if path.suffix == ".npz" and path.parent.name == "data":
            out["datasets"] += size
        elif path.name in ("model.pt", "state.pt"):
            out["checkpoints"] += size
        elif "features" in path.relative_to(results).parts[:1]:
            out["features"] += size
        else:
            out["other"] += size
    return out


def _train_estimates(config: dict[str, Any], results: Path, on_cluster: bool) -> list[tuple[float, float]]:
    """(estimated training seconds, measured wall) of each training job measured in ``results``."""
    gpu = resources.wants_gpu(config, on_cluster)
    out = []
    for path in results.rglob("*.bench.tsv"):
        match = TRAIN_BENCH.search(path.relative_to(results).as_posix())
        if not match:
            continue
        b, bb, m = match[1], match[2], match[3]
        if b not in config["benchmarks"] or bb not in config["backbones"]:
            continue
        try:
            per_task = resources.task_seconds(config, b, bb, m, gpu)
        except (KeyError, TypeError, ValueError):
            continue
        tasks = int(match[6]) - int(match[5]) + 1 if match[5] is not None else 1
        from clgrid.cost import read_bench

        out.append((tasks * per_task, read_bench(path)["wall_s"]))
    return out


def calibrate(config: dict[str, Any], results: str | Path, on_cluster: bool = False) -> Calibration:
    """Factors fitted on a results folder made by ``config`` (``on_cluster``: whether it ran on a cluster):

    - start-up per job of each rule: the mean measured wall of that rule's jobs (their training part is small
      or none); training jobs' start-up: ``init_model``'s (a job that builds a model and writes a checkpoint);
    - ``train_factor``: (Σ measured training wall − start-ups) / Σ estimated training seconds, over the training jobs
      measured (at least a hundredth: a fit on jobs that are all start-up says nothing about the slope);
    - CPU seconds per wall second (a job whose CPU time was not measured counts its wall: one core);
    - per kind of file, the measured bytes over the estimate for the jobs that wrote them (files and job counts
      of the same config: a partly run study calibrates on what it wrote).
    """
    results = Path(results)
    m = measured(results)
    cal = Calibration(source=str(results))
    for rule, row in m["rules"].items():
        if rule != "train" and row["jobs"]:
            cal.start_s[rule] = row["wall_s"] / row["jobs"]
    start_train = cal.start_s.get("init_model", START_S)
    cal.start_s["train"] = start_train
    pairs = _train_estimates(config, results, on_cluster)
    est = sum(e for e, _ in pairs)
    if est > 0:
        cal.train_factor = max(0.01, (sum(w for _, w in pairs) - start_train * len(pairs)) / est)
    # As ``compare`` counts them: a job whose CPU time was not measured counts its wall (one core).
    cpu = sum(r["cpu_s"] + r["wall_s"] - r["cpu_wall_s"] for r in m["rules"].values())
    wall = sum(r["wall_s"] for r in m["rules"].values())
    if wall > 0:
        cal.cpu_per_wall = cpu / wall
    # Bytes: the model's real size from the initial models written, then per kind the estimate of the jobs whose
    # files exist (states and models counted by file).
    cal.weights_factor = _weights_factor(config, results)
    est_disk = {k: 0.0 for k in KINDS}
    for job in jobs(config, on_cluster, cal.weights_factor):
        for kind, size in job.disk.items():
            est_disk[kind] += size
    fraction = _done_fraction(config, results)
    for kind in KINDS:
        if est_disk[kind] > 0 and m["disk"][kind] > 0 and fraction > 0:
            cal.disk_factor[kind] = m["disk"][kind] / (est_disk[kind] * fraction)
    return cal


def _weights_factor(config: dict[str, Any], results: Path) -> dict[str, float]:
    """Per arch: the bytes of the initial models in ``results`` over the arch table's estimate of them. An initial
    model holds the weights alone, so this is the model's real size however its config sizes it (hidden layers,
    widths), which the arch table does not know."""
    measured_bytes: dict[str, float] = {}
    estimated_bytes: dict[str, float] = {}
    for b, bb in cl.cells(config):
        arch = config["backbones"][bb].get("arch", "mlp")
        for s in config["seeds"]:
            path = results.parent / paths.INIT_MODEL.format(benchmark=b, backbone=bb, seed=s)
            if path.exists():
                measured_bytes[arch] = measured_bytes.get(arch, 0.0) + path.stat().st_size
                estimated_bytes[arch] = estimated_bytes.get(arch, 0.0) + checkpoint_bytes(config, bb)
    return {arch: measured_bytes[arch] / estimated_bytes[arch] for arch in measured_bytes}


def _done_fraction(config: dict[str, Any], results: Path) -> float:
    """The share of the config's task states present in ``results`` (1 for a finished study)."""
    runs = list(cl.runs(config)) + list(cl_selection.candidate_runs(config))
    states = [p for r in runs for p in cl_plan.task_files(paths.TASK_STATE, config, r.benchmark, r.backbone,
                                                          r.method, r.seed)]
    if not states:
        return 1.0
    root = results.parent
    return sum((root / p).exists() for p in states) / len(states)


def compare(rows: Mapping[str, Row], results: str | Path) -> dict[str, tuple[float, float, float]]:
    """Estimate against measurement for a finished folder: (estimated, measured, error %) of the total wall hours
    (every ``benchmark:`` file's seconds, summed), CPU hours (measured CPU seconds; a job without them counts its
    wall) and disk GB (every file under the folder)."""
    m = measured(results)
    wall = sum(r["wall_s"] for r in m["rules"].values()) / 3600
    # A job whose CPU time was not measured (a short one, or the warm worker's client without a usage line)
    # counts its wall time: one core.
    cpu = sum(r["cpu_s"] + r["wall_s"] - r["cpu_wall_s"] for r in m["rules"].values()) / 3600
    total = rows["total"]
    disk = sum(m["disk"].values()) / 1e9
    out = {}
    for name, est, meas in (("wall_h", total.wall_hours, wall), ("cpu_h", total.cpu_hours, cpu),
                            ("disk_gb", disk_total(total) / 1e9, disk)):
        out[name] = (est, meas, 100.0 * (est - meas) / meas if meas else math.nan)
    return out


# -- the command ---------------------------------------------------------------------------------------------------

def run(args) -> str:
    """``clgrid preview``: the table, the downloads, the budget's verdict; returns the text printed."""
    config = load(args.configfile, args.schema, args.overrides)
    cal = None
    if args.calibrate:
        made_by = load(args.calibrate_config, args.schema) if args.calibrate_config else config
        cal = calibrate(made_by, args.calibrate, on_cluster=False)
    rows = estimate(config, cal, on_cluster=not args.local)
    text = render(rows, downloads(config), cal)
    if config.get("budget"):
        try:
            warnings = check_budget(config, rows)
            text += "\n" + ("\n".join(f"WARNING {w}" for w in warnings) if warnings else "budget: within")
        except cl.ConfigError as err:
            text += f"\nSTOP (budget.on_exceed: stop): {err}"
    if args.compare:
        lines = ["\n| | estimated | measured | error % |", "|---|---:|---:|---:|"]
        for name, (est, meas, err) in compare(rows, args.compare).items():
            lines.append(f"| {name} | {est:.4g} | {meas:.4g} | {err:+.0f} |")
        text += "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return text
