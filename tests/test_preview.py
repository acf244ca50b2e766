"""The cost preview: its totals worked by hand on a tiny config, the budget's warn and stop naming the field, and the
calibration's arithmetic on synthetic benchmark files."""

import csv
import math

import pytest
import yaml

from clgrid import preview
from clgrid.catalog import archs
from clgrid.config import ConfigError
from tests.conftest import SCHEMA

TINY = {
    "device": "cpu",
    "seeds": [0, 1],
    "benchmarks": {"split": {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 5, "tasks_per_job": 1,
                             "train": {"epochs": 2, "batch_size": 32, "lr": 0.1}}},
    "backbones": {"mlp": {"arch": "mlp"}},
    "methods": ["naive", "ewc"],
}


def _write(tmp_path, config, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def _tiny(tmp_path, **top):
    return preview.load([_write(tmp_path, {**TINY, **top})], SCHEMA)


def test_totals_by_hand(tmp_path):
    config = _tiny(tmp_path)
    rows = preview.estimate(config, on_cluster=False)
    runs = 2 * 2  # methods × seeds
    assert rows["train"].jobs == runs * 5  # tasks_per_job 1: a job per task
    assert rows["init_model"].jobs == 2 and rows["evaluate_init"].jobs == 2  # one per seed, shared by the methods
    assert rows["run_metrics"].jobs == runs and rows["analyze_run"].jobs == runs
    assert rows["prepare_dataset"].jobs == 1 and rows["prepare_scenario"].jobs == 1
    report = len(preview.REPORT_RULES_PER_CELL) + len(preview.REPORT_RULES)
    assert rows["total"].jobs == 1 + 1 + 2 + 2 + runs * 5 + runs + runs + report
    params = archs.get("mlp").parameters
    # per seed, naive's 5 states are a model each; EWC's state after task t keeps a Fisher and an anchor per task
    # learned: 1 + 2 (t + 1) models, 35 over the 5 tasks; plus the seeds' initial models
    assert rows["train"].disk["checkpoints"] == params * 4 * (5 + 35) * 2
    assert rows["total"].disk["checkpoints"] == params * 4 * ((5 + 35) * 2 + 2)
    # digits: 1347 training images of 8x8 float32, plus a quarter for the test split
    assert rows["total"].disk["datasets"] == 64 * 4 * 1347 * 1.25
    assert rows["total"].gpu_hours == 0  # device cpu
    # a training job: start-up + samples × epochs × seconds per sample × pixel scale (resources.task_seconds)
    mlp = archs.get("mlp")
    per_sample = mlp.cpu_seconds_per_sample * (64 / 3072 if mlp.cost_scales_with_pixels else 1.0)
    seconds = 1347 / 5 * 2 * 2 * per_sample  # a task's share × 2 (one extra batch a step) × 2 epochs
    assert rows["train"].wall_hours * 3600 == pytest.approx(runs * 5 * (preview.START_S + seconds))
    assert rows["total"].cpu_hours == pytest.approx(rows["total"].wall_hours)
    assert preview.downloads(config) == []  # digits ships with scikit-learn, the MLP has no weights


def test_method_state_by_hand(tmp_path):
    # A task state is the model plus what the method's FACTS say it keeps (clgrid.catalog.methods.FACT_KEYS).
    config = _tiny(tmp_path, methods=["naive", "ewc", "ewc_online", "si", "replay", "gdumb", "ogd", "agem",
                                      "frozen_ewc"],
                   method_params={"replay": {"buffer_size": 200}, "gdumb": {"memory_size": 500},
                                  "ogd": {"ogd_samples": 20}},
                   variants={"frozen_ewc": {"method": "ewc", "params": {"freeze": "all"}}})
    model = archs.get("mlp").parameters * 4

    def state(method, task):
        return preview.state_bytes(config, "split", "mlp", method, task)

    assert state("naive", 3) == model
    assert state("ewc", 3) == model * (1 + 2 * 4)  # a Fisher and an anchor per task learned
    assert state("ewc_online", 3) == model * 3  # one running Fisher and an anchor
    assert state("si", 0) == model * 3  # importance and anchor
    assert state("ogd", 1) == model * (1 + 20 * 2)  # a gradient direction per stored sample, per task
    assert state("frozen_ewc", 3) == model  # the Fisher of a frozen backbone's trainable part: not known, not counted
    sample = 64 * 4 + preview.SAMPLE_LABEL_BYTES  # an 8x8 float32 digit (the one float dataset), its label and task
    # a buffer fills with the training samples seen so far: digits' 1347 / 5 = 269.4 a task
    assert state("replay", 0) == model + 200 * sample
    assert state("gdumb", 0) == pytest.approx(model * 2 + 269.4 * sample)  # its initial weights, a part-full memory
    assert state("gdumb", 1) == pytest.approx(model * 2 + 500 * sample)
    # A-GEM keeps samples_per_class (25 by default) of each class of each task: 2 classes a task here
    assert state("agem", 2) == model + 25 * 2 * 3 * sample


@pytest.mark.parametrize("method", ["naive", "ewc", "ewc_online", "si", "l2_init", "kd_ema", "replay", "gdumb", "ogd",
                                    "agem"])
def test_method_state_estimate_matches_the_files_a_real_run_writes(method, tmp_path, monkeypatch):
    # The same estimate, with the model's real size in place of the arch table's, against the state files of a
    # real run through the DAG's own jobs (2 tasks of split digits, an epoch each).
    from clgrid.inprocess import run_cell, validated
    from tests.conftest import DEFAULT_CONFIG

    config = validated(DEFAULT_CONFIG, SCHEMA)
    config["benchmarks"] = {"split": {**config["benchmarks"]["split_digits"], "n_tasks": 2}}
    config["benchmarks"]["split"]["train"] = {**config["benchmarks"]["split"]["train"], "epochs": 1}
    config["method_params"]["ogd"]["ogd_samples"] = 10
    config["method_params"]["replay"]["buffer_size"] = 300
    config["method_params"]["gdumb"]["memory_size"] = 1000  # more than task 0's 674 samples: part full after it
    run_cell(config, "split", "mlp", method, 0, tmp_path)
    states = sorted(tmp_path.rglob("state.pt"), key=lambda p: p.parent.name)
    model_file = next(tmp_path.rglob("model.pt")).stat().st_size  # the initial model: the weights alone
    monkeypatch.setattr(preview, "checkpoint_bytes", lambda config, backbone, weights_factor=None: model_file)
    assert len(states) == 2
    for task, path in enumerate(states):
        estimate = preview.state_bytes(config, "split", "mlp", method, task)
        assert estimate == pytest.approx(path.stat().st_size, rel=0.1), (task, path)


def test_snakemakes_config_overrides_reach_the_preview(tmp_path):
    # the preview rule passes snakemake's --config values on; here one seed instead of two
    config = preview.load([_write(tmp_path, TINY)], SCHEMA, {"seeds": [0]})
    assert config["seeds"] == [0] and preview.estimate(config, on_cluster=False)["init_model"].jobs == 1


def test_gpu_hours_on_a_cluster(tmp_path):
    config = _tiny(tmp_path, device="auto")
    rows = preview.estimate(config, on_cluster=True)
    torch_jobs = sum(rows[r].wall_hours for r in ("init_model", "evaluate_init", "train", "analyze_run"))
    assert rows["total"].gpu_hours == pytest.approx(torch_jobs)


def test_downloads_name_datasets_not_imported(tmp_path):
    config = _tiny(tmp_path, benchmarks={"split": {**TINY["benchmarks"]["split"], "dataset": "mnist"}})
    assert [(kind, name) for kind, name, _ in preview.downloads(config)] == [("dataset", "mnist")]


def test_budget_warns_naming_the_field(tmp_path):
    config = _tiny(tmp_path, budget={"disk_gb": 0.001, "cpu_hours": 1000})
    assert config["budget"]["on_exceed"] == "warn"  # the schema's default
    warnings = preview.check_budget(config)
    assert len(warnings) == 1 and warnings[0].startswith("budget.disk_gb:")


def test_budget_stop_names_the_field(tmp_path):
    config = _tiny(tmp_path, budget={"cpu_hours": 1e-6, "on_exceed": "stop"})
    with pytest.raises(ConfigError) as err:
        preview.check_budget(config)
    assert err.value.parts == ("budget", "cpu_hours")
    assert "budget.cpu_hours" in str(err.value)


def test_no_budget_no_check(tmp_path):
    assert preview.check_budget(_tiny(tmp_path)) == []


def test_budget_rejects_unknown_fields(tmp_path):
    with pytest.raises(ConfigError):
        _tiny(tmp_path, budget={"gpu_hour": 3})


def _bench(path, wall, cpu, rss=600.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load",
                    "cpu_time"])
        w.writerow([wall, "0:00:01", rss, 0, 0, 0, 0, 0, 0, cpu])


def test_calibration_math(tmp_path):
    config = _tiny(tmp_path)
    results = tmp_path / "results"
    est = preview.resources.task_seconds(config, "split", "mlp", "naive", False)
    # Two init jobs of 2 s (the training start-up), two naive training jobs of 2 + 10 × est seconds.
    for seed in (0, 1):
        _bench(results / f"init/split/mlp/s{seed}/init.bench.tsv", 2.0, 1.0)
        _bench(results / f"runs/split/mlp/naive/s{seed}/train_tasks0to0.bench.tsv", 2.0 + 10 * est, 1.0 + 5 * est)
        state = results / f"runs/split/mlp/naive/s{seed}/task0/state.pt"
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_bytes(b"\0" * 1000)
    cal = preview.calibrate(config, results)
    assert cal.start_s["init_model"] == 2.0 and cal.start_s["train"] == 2.0
    assert cal.train_factor == pytest.approx(10.0)
    assert cal.cpu_per_wall == pytest.approx((2 * 1.0 + 2 * (1 + 5 * est)) / (2 * 2.0 + 2 * (2 + 10 * est)))
    _bench(results / "benchmarks/tables.tsv", 4.0, "NA", rss=10.0)  # not measured: counts its wall as CPU
    assert preview.calibrate(config, results).cpu_per_wall == pytest.approx(
        (2 * 1.0 + 2 * (1 + 5 * est) + 4.0) / (2 * 2.0 + 2 * (2 + 10 * est) + 4.0))
    (results / "benchmarks/tables.tsv").unlink()
    # 2 of the config's 20 task states exist: their 2000 bytes against the estimate's share of 2 in 20 of all
    # checkpoints (naive's 10 states, EWC's 10 (35 models a seed, test_totals_by_hand), the 2 initial models)
    params = archs.get("mlp").parameters
    est_ckpt = params * 4 * (10 + 70 + 2)
    assert cal.disk_factor["checkpoints"] == pytest.approx(2000 / (est_ckpt * 2 / 20))
    assert cal.weights_factor == {}  # no initial model written: the arch table's size stands
    rows = preview.estimate(config, cal, on_cluster=False)
    assert rows["train"].wall_hours * 3600 == pytest.approx(20 * (2.0 + 10 * est))
    measured = preview.compare(rows, results)
    assert measured["wall_h"][1] == pytest.approx((4 * 2.0 + 2 * 10 * est) / 3600)
    assert not math.isnan(measured["wall_h"][2])


def test_calibration_takes_the_models_real_size_from_the_initial_models(tmp_path):
    # The initial models hold the weights alone: their bytes over the arch table's estimate are the model's real
    # size, which scales every model-sized tensor of a state (EWC's Fisher and anchor too) and nothing else.
    config = _tiny(tmp_path)
    results = tmp_path / "results"
    params = archs.get("mlp").parameters
    real = 100_000  # bytes of one initial model: the config's MLP is smaller than the arch table's
    for seed in (0, 1):
        init = results / f"init/split/mlp/s{seed}/model.pt"
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_bytes(b"\0" * real)
    # every task state written, each exactly as the method's facts say at the real size
    for method, models in (("naive", lambda t: 1), ("ewc", lambda t: 1 + 2 * (t + 1))):
        for seed in (0, 1):
            for t in range(5):
                state = results / f"runs/split/mlp/{method}/s{seed}/task{t}/state.pt"
                state.parent.mkdir(parents=True, exist_ok=True)
                state.write_bytes(b"\0" * (real * models(t)))
    cal = preview.calibrate(config, results)
    assert cal.weights_factor == {"mlp": pytest.approx(real / (params * 4))}
    assert cal.disk_factor["checkpoints"] == pytest.approx(1.0)  # nothing left for the per-kind factor to fix
    rows = preview.estimate(config, cal, on_cluster=False)
    assert rows["total"].disk["checkpoints"] == pytest.approx(real * ((5 + 35) * 2 + 2))
    assert f"mlp model size ×{real / (params * 4):.3g}" in preview.render(rows, [], cal)


def test_cli_prints_the_table(tmp_path, capsys):
    from clgrid.cli import main

    path = _write(tmp_path, {**TINY, "budget": {"gpu_hours": 1, "disk_gb": 1e-6}})
    out = tmp_path / "preview.md"
    assert main(["preview", "--configfile", str(path), "--schema", str(SCHEMA), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| **total** | 40 |" in text
    assert "WARNING budget.disk_gb" in text and "budget.gpu_hours" not in text


@pytest.mark.parametrize("name", ["config/config.yaml", "config/experiments/per_task_digits.yaml"])
def test_jobs_match_snakemakes_dry_run(tmp_path, name):
    """The plan's jobs are the DAG's: the count against `snakemake -n` (less its `all` job), for the default grid
    and a per-task selection (a training job per candidate task, the choices and adopted states)."""
    import re
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(tmp_path),
                           "-s", str(REPO / "Snakefile"), "--configfile", str(REPO / name)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", done.stdout.split("Job stats:")[1], re.M))
    rows = preview.estimate(preview.load([REPO / name], SCHEMA), on_cluster=False)
    assert rows["total"].jobs == int(counts["total"]) - 1
    for rule in ("init_model", "evaluate_init", "analyze_run", "run_metrics", "select_plasticity", "adopt_selected",
                 "train_per_task_candidate"):
        if rule in counts:
            assert rows[rule].jobs == int(counts[rule]), rule


def test_snakemake_stops_on_the_budget(tmp_path):
    import subprocess
    import sys

    from tests.conftest import DEFAULT_CONFIG, REPO

    budget = _write(tmp_path, {"budget": {"disk_gb": 0.001, "on_exceed": "stop"}}, "budget.yaml")
    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(tmp_path),
                           "-s", str(REPO / "Snakefile"), "--configfile", str(DEFAULT_CONFIG), str(budget)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1
    assert "budget.disk_gb" in done.stderr + done.stdout


def test_a_budget_changes_no_spec(tmp_path):
    """The budget is a check, not a part of any run: every job's spec (and so its config hash) is the same."""
    from clgrid import config as cl

    plain, budgeted = _tiny(tmp_path), preview.load([_write(tmp_path, {**TINY, "budget": {"gpu_hours": 1}}, "b.yaml")],
                                                    SCHEMA)
    for run in cl.runs(plain):
        args = (run.benchmark, run.backbone, run.method, run.seed)
        assert cl.run_spec(plain, *args) == cl.run_spec(budgeted, *args)
        assert cl.init_spec(plain, *args[:2], run.seed) == cl.init_spec(budgeted, *args[:2], run.seed)
