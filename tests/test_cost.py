"""clgrid.cost: FLOPs of one step checked by hand, Snakemake's benchmark files, samples, checkpoint bytes, the
rows of a run from the files it left."""

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from clgrid import cost
from clgrid.io import producer_rule

# A real benchmark file of the default grid: a training job the warm worker ran (the client was measured) ...
CLIENT_BENCH = ("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                "0.74\t0:00:00\t17.68\t23.36\t5.73\t8.46\t0.00\t0.00\t0.00\t0.02\n")
# ... and one that ran in its own process (CLGRID_WORKER=0, or the job that starts the worker).
DIRECT_BENCH = ("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                "5.32\t0:00:05\t698.14\t3312.04\t401.22\t512.87\t38.48\t0.34\t94.92\t5.05\n")

DIGITS = {"n_classes": 10, "input_shape": [1, 8, 8], "input_norm": None,
          "class_names": [str(c) for c in range(10)], "tasks": [{"dataset": "digits"}]}
MLP = {"backbone_cfg": {"arch": "mlp", "hidden": [256, 256]}, "method_name": "naive", "method_params": {},
       "train": {"epochs": 1, "batch_size": 32}}


def test_flops_of_one_mlp_step_match_the_hand_count():
    # MLP 64 -> 256 -> 256 -> 10 (8x8 digits, a linear head). FlopCounterMode counts a matmul of (m, k) x (k, n)
    # as 2·m·k·n (a multiply-add is 2 FLOPs) and nothing for activations, biases or the loss. Per sample:
    # forward: 2·(64·256 + 256·256 + 256·10) = 168,960;
    # backward: each layer's weight gradient (the forward's count again) and its input gradient (again), except
    # the first layer's input gradient (the images need none): 2·168,960 - 2·64·256 = 305,152.
    forward = 2 * (64 * 256 + 256 * 256 + 256 * 10)
    backward = 2 * forward - 2 * 64 * 256
    train, evaluate = cost.flops_per_sample(MLP, DIGITS)
    assert evaluate == forward == 168_960
    assert train == forward + backward == 474_112


def test_a_frozen_backbone_has_no_weight_gradients_in_the_count():
    # freeze: all (the method freezes the backbone): backward is only the head's weight gradient, 2·256·10 a sample.
    frozen = {**MLP, "method_params": {"freeze": "all"}}
    train, evaluate = cost.flops_per_sample(frozen, DIGITS)
    assert evaluate == 168_960
    assert train == 168_960 + 2 * 256 * 10


def test_the_count_does_not_depend_on_the_batch_size():
    assert cost.flops_per_sample({**MLP, "train": {"epochs": 1, "batch_size": 7}}, DIGITS) == (474_112, 168_960)


def test_a_benchmark_file_of_a_job_in_its_own_process_gives_its_seconds_and_peak(tmp_path):
    path = tmp_path / "train.bench.tsv"
    path.write_text(DIRECT_BENCH)
    assert cost.read_bench(path) == {"wall_s": 5.32, "cpu_s": 5.05, "max_rss_mb": 698.14}


def test_a_job_measured_as_the_warm_workers_client_has_no_cpu_or_memory(tmp_path):
    path = tmp_path / "train.bench.tsv"
    path.write_text(CLIENT_BENCH)
    job = cost.read_bench(path)
    assert job["wall_s"] == 0.74  # the client waits for the job: the wall time is the job's
    assert math.isnan(job["cpu_s"]) and math.isnan(job["max_rss_mb"])


def test_a_job_the_warm_worker_ran_reports_its_own_cpu_and_memory_in_its_log(tmp_path):
    from clgrid.worker import USAGE_PREFIX

    path = tmp_path / "train.bench.tsv"
    path.write_text(CLIENT_BENCH)
    (tmp_path / "train.log").write_text(f"2026 clgrid INFO after task 0\n{USAGE_PREFIX} cpu_s=1.250 max_rss_mb=612.5\n")
    assert cost.read_bench(path) == {"wall_s": 0.74, "cpu_s": 1.25, "max_rss_mb": 612.5}


def test_the_worker_child_reports_its_usage_on_stderr(capsys):
    from clgrid import worker
    from clgrid.worker import server

    server._report_usage()
    line = capsys.readouterr().err.strip()
    assert line.startswith(worker.USAGE_PREFIX) and "cpu_s=" in line and float(line.split("max_rss_mb=")[1]) > 10


def test_a_short_job_in_its_own_process_is_measured_when_sampled(tmp_path):
    # A real metrics job of the default grid with CLGRID_WORKER=0: no torch, an interpreter with numpy.
    path = _write(tmp_path / "metrics.bench.tsv", DIRECT_BENCH.splitlines()[0] +
                  "\n1.32\t0:00:01\t38.61\t320.10\t19.48\t25.13\t0.00\t0.00\t14.62\t0.19\n")
    assert cost.read_bench(path) == {"wall_s": 1.32, "cpu_s": 0.19, "max_rss_mb": 38.61}


def test_repeated_benchmarks_give_the_mean_seconds_and_the_largest_peak(tmp_path):
    path = tmp_path / "b.tsv"
    path.write_text(DIRECT_BENCH + "3.00\t0:00:03\t900.00\t1\t1\t1\t0\t0\t0\t2.95\n")
    assert cost.read_bench(path) == {"wall_s": pytest.approx(4.16), "cpu_s": pytest.approx(4.0), "max_rss_mb": 900.0}


def test_na_and_other_files_are_refused_or_nan(tmp_path):
    na = tmp_path / "na.tsv"
    na.write_text(DIRECT_BENCH.splitlines()[0] + "\n1.5\t0:00:01\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n")
    job = cost.read_bench(na)
    assert job["wall_s"] == 1.5 and math.isnan(job["cpu_s"]) and math.isnan(job["max_rss_mb"])
    other = tmp_path / "other.tsv"
    other.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not a Snakemake benchmark file"):
        cost.read_bench(other)


def test_samples_are_the_training_split_times_the_epochs_or_the_steps_taken():
    assert cost.samples_trained(269, {"epochs": 10, "batch_size": 32}) == 2690
    # 10 samples at batch 4: an epoch is 3 steps (4, 4, 2); 7 steps = two epochs and one batch of 4.
    assert cost.samples_trained(10, {"epochs": 99, "batch_size": 4, "iterations": 7}) == 24
    assert cost.samples_trained(0, {"epochs": 10, "batch_size": 4}) == 0


def test_samples_of_a_tiny_scenario_by_hand():
    scenario = {"tasks": [{"dataset": "d", "train_idx": [0, 1, 2, 3, 4], "test_idx": [0, 1], "val_idx": [5]},
                          {"dataset": "d", "train_idx": [6, 7, 8, 9], "test_idx": [2, 3, 4]},
                          {"dataset": "d", "train_idx": None, "test_idx": None}]}
    counts = {"d": {"train": [6, 7], "test": [3, 4]}}  # a whole split: 13 training, 7 test samples
    sizes = cost.split_sizes(scenario, counts)
    assert sizes == [{"train": 5, "test": 2, "val": 1}, {"train": 4, "test": 3, "val": 0},
                     {"train": 13, "test": 7, "val": 0}]
    train = {"epochs": 3, "batch_size": 2}
    assert [cost.task_samples(sizes, t, train, False) for t in range(3)] == [15, 12, 39]
    assert [cost.task_samples(sizes, t, train, True) for t in range(3)] == [15, 27, 66]  # joint: tasks so far
    # A run that diverged at task 1, step 3 (of 2-sample batches: 4 + 2 samples an epoch), trains nothing after it.
    diverged = {"task": 1, "step": 3}
    assert [cost.task_samples(sizes, t, train, False, diverged) for t in range(3)] == [15, 4 + 2, 0]
    assert cost.eval_samples(sizes, 0, None) == 2 + 3 + 7 + 1  # every test split and the validation split
    assert cost.eval_samples(sizes, 0, "validation") == 1  # a selection candidate reads no test data


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _tiny_results(root: Path, device: str = "cuda:0") -> Path:
    """A finished joint run of 2 tasks trained in one job, its seed's initial model and its metrics job."""
    _write(root / "results/scenarios/tiny.json", json.dumps({
        **DIGITS, "tasks": [{"dataset": "digits", "train_idx": [0, 1, 2, 3, 4], "test_idx": [0, 1]},
                            {"dataset": "digits", "train_idx": [5, 6, 7, 8], "test_idx": [2, 3, 4]}]}))
    _write(root / "results/data/digits.json", json.dumps({"counts": {"train": [9], "test": [5]}}))
    run = root / "results/runs/tiny/mlp/joint/s0"
    record = json.dumps({"provenance": {"device": device}})
    for t, size in ((0, 1000), (1, 1234)):
        (run / f"task{t}").mkdir(parents=True)
        (run / f"task{t}/state.pt").write_bytes(b"x" * size)
        _write(run / f"task{t}/eval.json", record)
    _write(run / "train_tasks0to1.bench.tsv", DIRECT_BENCH)
    _write(run / "metrics.bench.tsv", CLIENT_BENCH)
    _write(run / "metrics.json", "{}")
    init = root / "results/init/tiny/mlp/s0"
    _write(init / "init.bench.tsv", DIRECT_BENCH)
    _write(init / "eval.bench.tsv", DIRECT_BENCH)
    _write(init / "eval.json", record)
    (init / "model.pt").write_bytes(b"y" * 777)
    return run


def test_the_rows_of_a_run_from_the_files_it_left(tmp_path):
    run = _tiny_results(tmp_path)
    spec = {**MLP, "method_name": "joint", "train": {"epochs": 2, "batch_size": 4}}
    rows = cost.cost_rows([run / "metrics.json"], {"tiny/mlp/joint": spec}, flops={"tiny/mlp/joint": (10.0, 3.0)})
    assert [r["task"] for r in rows] == [0, 1, "init", "metrics"]
    task0, task1, init, metrics = rows
    assert task0["benchmark"] == "tiny" and task0["method"] == "joint" and task0["seed"] == 0
    assert task0["stage"] == "final"
    # The job trained both tasks: its 5.32 s and 5.05 CPU s are split evenly; its peak is each task's.
    assert task0["wall_s"] == task1["wall_s"] == 5.32 / 2 and task0["cpu_s"] == 5.05 / 2
    assert task0["max_rss_mb"] == 698.14
    assert task0["gpu_s"] == 5.32 / 2  # the evaluation's provenance says it ran on a GPU
    assert task0["checkpoint_bytes"] == os.path.getsize(run / "task0/state.pt") == 1000
    assert task1["checkpoint_bytes"] == 1234
    assert (task0["samples"], task1["samples"]) == (5 * 2, (5 + 4) * 2)  # joint trains on the tasks so far
    assert task1["flops_train"] == 10.0 * 18 and task1["flops_eval"] == 3.0 * 5  # both test splits after a task
    assert init["wall_s"] == 2 * 5.32 and init["samples"] == 0 and init["flops_eval"] == 15.0
    assert init["checkpoint_bytes"] == 777
    assert metrics["wall_s"] == 0.74 and math.isnan(metrics["cpu_s"]) and metrics["gpu_s"] == 0


def test_a_run_on_the_cpu_has_no_gpu_seconds_and_candidates_are_their_own_stage(tmp_path):
    run = _tiny_results(tmp_path, device="cpu")
    spec = {**MLP, "method_name": "naive", "train": {"epochs": 1, "batch_size": 4}}
    rows = cost.cost_rows([run], {"tiny/mlp/joint": spec}, stage="selection", flops={"tiny/mlp/joint": (1.0, 1.0)})
    assert all(r["gpu_s"] == 0 for r in rows) and {r["stage"] for r in rows} == {"selection"}
    assert [r["samples"] for r in rows[:2]] == [5, 4]


def test_a_task_trained_in_its_own_job_reads_its_own_benchmark_file(tmp_path):
    run = _tiny_results(tmp_path)
    (run / "train_tasks0to1.bench.tsv").unlink()
    _write(run / "task0/train.bench.tsv", CLIENT_BENCH)
    _write(run / "task1/train.bench.tsv", DIRECT_BENCH)
    rows = cost.cost_rows([run], {"tiny/mlp/joint": MLP}, flops={"tiny/mlp/joint": (1.0, 1.0)})
    assert [r["wall_s"] for r in rows[:2]] == [0.74, 5.32]


def test_a_run_without_a_spec_or_outside_results_runs_is_refused(tmp_path):
    run = _tiny_results(tmp_path)
    with pytest.raises(KeyError, match="tiny/mlp/joint"):
        cost.cost_rows([run], {})
    with pytest.raises(ValueError, match="not a run folder"):
        cost.run_parts(tmp_path / "somewhere/else/a/b/c/s0")


def test_cost_specs_hold_what_the_rows_need_once_per_method(default_config):
    from clgrid import config as cl

    specs = cost.cost_specs(default_config, cl.runs(default_config))
    assert len(specs) == 10  # 2 benchmarks x 1 backbone x 5 methods, not x 3 seeds
    spec = specs["split_digits/mlp/replay"]
    assert spec["method_name"] == "replay" and spec["train"]["batch_size"] == 32 and spec["train"]["epochs"] == 10
    assert spec["backbone_cfg"]["hidden"] == [256, 256] and spec["method_params"]["buffer_size"] == 200
    json.dumps(specs)  # the rule passes it as JSON


def test_gpu_devices():
    assert cost.is_gpu("cuda") and cost.is_gpu("cuda:1") and cost.is_gpu("mps")
    assert not cost.is_gpu("cpu") and not cost.is_gpu(None)


def test_the_cost_files_name_the_rules_that_make_them():
    assert producer_rule("results/tables/cost.csv") == "cost_tables"
    assert producer_rule("results/tables/cost.md") == "cost_tables"
    assert producer_rule("results/tables/summary.csv") == "tables"
    assert producer_rule("results/figures/split_digits/mlp/acc_vs_compute.png") == "cost_figure"
    assert producer_rule("results/figures/split_digits/mlp/acc_matrix.png") == "figures"


def test_the_cost_tables_verb_writes_the_csv_and_markdown(tmp_path):
    from clgrid.cli import main

    run = _tiny_results(tmp_path)
    specs = {"tiny/mlp/joint": {**MLP, "method_name": "joint", "train": {"epochs": 2, "batch_size": 4}}}
    out = tmp_path / "results/tables"
    assert main(["cost-tables", "--metrics", str(run / "metrics.json"), "--specs", json.dumps(specs),
                 "--out-dir", str(out)]) == 0
    lines = (out / "cost.csv").read_text().splitlines()
    assert lines[0] == ",".join(cost.COLUMNS)
    # task 1 of the joint run: 18 samples x 474,112 FLOPs (the MLP's step, counted above)
    assert lines[2].split(",")[:6] == ["final", "tiny", "mlp", "joint", "0", "1"]
    assert float(lines[2].split(",")[cost.COLUMNS.index("flops_train")]) == 18 * 474_112
    assert "### Final runs: tiny" in (out / "cost.md").read_text()


def test_candidates_given_to_the_verb_are_reported_as_selection_cost(tmp_path):
    from clgrid.cli import main

    final = _tiny_results(tmp_path)
    candidate = tmp_path / "results/runs/tiny/mlp/joint~val~lr=0.1/s0"
    candidate.mkdir(parents=True)
    for name in ("task0", "train_tasks0to1.bench.tsv", "metrics.bench.tsv"):
        (candidate / name).symlink_to(final / name)  # a candidate that trained only task 0 (first-k protocol)
    spec = {**MLP, "method_name": "joint", "train": {"epochs": 2, "batch_size": 4}}
    specs = {"tiny/mlp/joint": spec, "tiny/mlp/joint~val~lr=0.1": spec}
    out = tmp_path / "results/tables"
    assert main(["cost-tables", "--metrics", str(final / "metrics.json"), "--selection-runs", str(candidate),
                 "--specs", json.dumps(specs), "--out-dir", str(out)]) == 0
    rows = pd.read_csv(out / "cost.csv", dtype={"task": str})
    assert list(rows[rows["stage"] == "selection"]["task"]) == ["0", "init", "metrics"]
    assert set(rows[rows["stage"] == "final"]["method"]) == {"joint"}
    assert "### Selection (candidates on validation data): tiny" in (out / "cost.md").read_text()


def test_a_model_the_count_cannot_build_leaves_the_flops_empty_not_the_table(tmp_path, caplog):
    run = _tiny_results(tmp_path)
    broken = {**MLP, "backbone_cfg": {"arch": "mlp", "hidden": "not a list"}}
    rows = cost.cost_rows([run], {"tiny/mlp/joint": broken})
    assert all(math.isnan(r["flops_train"]) for r in rows[:2]) and rows[0]["samples"] == 5
    assert "FLOPs of tiny/mlp/joint not counted" in caplog.text


def test_the_meta_device_counts_what_the_cpu_counts():
    assert cost._count(MLP, DIGITS, "meta") == cost._count(MLP, DIGITS, "cpu") == (474_112, 168_960)


def test_the_samples_a_method_trained_on_come_from_its_task_log(tmp_path):
    # GDumb retrains on its memory: 500 samples x 2 epochs, not the task's 12,000 training samples.
    log = tmp_path / "train.log"
    log.write_text("2026 clgrid INFO run split_mnist/mlp/gdumb_500/s0 task 3: 500 training samples on cpu\n"
                   "2026 clgrid INFO samples through the backbone in this job: 35000\n")
    assert cost.logged_training_samples(log, 3) == 500
    assert cost.logged_training_samples(log, 2) is None and cost.logged_training_samples(tmp_path / "no.log", 3) is None
    sizes = [{"train": 12000, "test": 2000}] * 5
    assert cost.task_samples(sizes, 3, {"epochs": 2, "batch_size": 10}, False, logged=500) == 1000
    assert cost.task_samples(sizes, 3, {"epochs": 2, "batch_size": 10}, False) == 24000
