"""Tracker export (clgrid.trackers): each tracker's export read back with that library's own reader, offline, and
a second export that adds nothing. Skipped where the `trackers` extra is not installed (CI installs it)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clgrid.trackers import export_run, task_steps, tracker_id

# Two small finished runs: accuracy matrices written by hand (acc_matrix[t][i]: accuracy on task i after task t).
RUNS = {
    "split_digits/mlp/finetune/s0": [[90.0, 0.0], [10.0, 80.0]],
    "split_digits/mlp/ewc/s1": [[95.5, 0.0], [60.25, 70.0]],
}
SPEC = {"method_name": "ewc", "method_params": {"lambda": 100.0}, "train": {"epochs": 2, "lr": 0.01}}
ALL = {"tensorboard": True, "mlflow": True, "wandb": True}


def write_metrics(folder: Path, run: str, matrix) -> Path:
    benchmark, backbone, method, seed = run.split("/")
    seen = [sum(row[: t + 1]) / (t + 1) for t, row in enumerate(matrix)]
    metrics = {"run": run, "benchmark": benchmark, "backbone": backbone, "method": method, "seed": int(seed[1:]),
               "acc_matrix": matrix, "acc_seen": seen, "metrics": {"acc": seen[-1], "forgetting": matrix[0][0] -
                                                                   matrix[1][0]},
               "provenance": {"config_hash": "abcdef0123456789", "seed": int(seed[1:])}}
    path = folder / "runs" / run / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    return path


@pytest.fixture
def runs(tmp_path):
    return {run: write_metrics(tmp_path, run, matrix) for run, matrix in RUNS.items()}


@pytest.fixture
def figure(tmp_path):
    from PIL import Image

    path = tmp_path / "acc_matrix.png"
    Image.new("RGB", (8, 6), (255, 0, 0)).save(path)
    return path


def export_all(runs, figure, root, options):
    return {run: export_run(path, {**SPEC, "seed": i}, [figure], options, root)
            for i, (run, path) in enumerate(runs.items())}


def test_task_steps_rows_of_the_matrix_and_finals_at_the_last_step():
    steps = task_steps({"acc_matrix": [[90.0, 0.0], [10.0, 80.0]], "acc_seen": [90.0, 45.0],
                        "metrics": {"acc": 45.0, "forgetting": 80.0}})
    assert steps == [{"acc/task0": 90.0, "acc/task1": 0.0, "acc_seen": 90.0},
                     {"acc/task0": 10.0, "acc/task1": 80.0, "acc_seen": 45.0, "final/acc": 45.0,
                      "final/forgetting": 80.0}]
    assert tracker_id("a/b/c/s0", "h1") == tracker_id("a/b/c/s0", "h1") != tracker_id("a/b/c/s0", "h2")


def test_tensorboard_read_back_and_rerun_adds_nothing(runs, figure, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def read(run):
        folder = tmp_path / "out" / "tensorboard" / run
        events = list(folder.iterdir())
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        acc.Reload()
        return events, acc

    options = {"tensorboard": True}
    export_all(runs, figure, tmp_path / "out", options)
    counts = {}
    for run, matrix in RUNS.items():
        events, acc = read(run)
        assert len(events) == 1
        for i in range(2):
            assert [(e.step, e.value) for e in acc.Scalars(f"acc/task{i}")] == [(t, pytest.approx(matrix[t][i]))
                                                                                 for t in range(2)]
        config = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
        assert json.loads(config.strip("`\n"))["spec"]["method_params"] == {"lambda": 100.0}
        assert json.loads(config.strip("`\n"))["run"] == run
        assert [(i.width, i.height) for i in acc.Images("figures/acc_matrix")] == [(8, 6)]
        counts[run] = {tag: len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}
    export_all(runs, figure, tmp_path / "out", options)
    for run in RUNS:
        events, acc = read(run)
        assert len(events) == 1  # the folder was replaced, not added to
        assert {tag: len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"]} == counts[run]
    assert sorted(p.name for p in (tmp_path / "out" / "tensorboard" / "split_digits" / "mlp").iterdir()) == [
        "ewc", "finetune"]


def test_mlflow_read_back_and_rerun_adds_nothing(runs, figure, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    options = {"mlflow": True, "project": "study"}
    export_all(runs, figure, tmp_path / "out", options)
    client = MlflowClient(tracking_uri=(tmp_path / "out" / "mlruns").as_uri())

    def snapshot():
        experiment = client.get_experiment_by_name("study")
        found = client.search_runs([experiment.experiment_id])
        return {r.info.run_name: (r, {k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)]
                                      for k in r.data.metrics}) for r in found}

    first = snapshot()
    assert sorted(first) == sorted(RUNS)
    for run, matrix in RUNS.items():
        found, history = first[run]
        assert found.data.tags["clgrid.tracker_id"] == tracker_id(run, "abcdef0123456789")
        assert found.data.params["spec.method_params.lambda"] == "100.0"
        assert found.data.params["spec.train.epochs"] == "2"
        assert found.data.params["method"] == run.split("/")[2]  # a string as it is, the rest as JSON
        assert found.data.params["spec.method_name"] == "ewc"
        for i in range(2):
            assert history[f"acc/task{i}"] == [(t, pytest.approx(matrix[t][i])) for t in range(2)]
        artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
        assert {"config.json", "metrics.json", "figures"} <= artifacts
        assert [a.path for a in client.list_artifacts(found.info.run_id, "figures")] == ["figures/acc_matrix.png"]
    export_all(runs, figure, tmp_path / "out", options)
    second = snapshot()
    assert sorted(second) == sorted(RUNS)  # no second run of either
    assert {run: (r.info.run_id, h) for run, (r, h) in second.items()} == {
        run: (r.info.run_id, h) for run, (r, h) in first.items()}  # same runs, no metric point twice


def wandb_records(folder: Path):
    """W&B's own reader of an offline run's transaction log (`wandb leet inspect --json`): one record a line."""
    (log,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    out = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", str(log)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return log, [json.loads(line) for line in out.splitlines() if line.strip()]


def test_wandb_offline_read_back_and_rerun_adds_nothing(runs, figure, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    if shutil.which("wandb", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the wandb command is not installed beside this Python")
    monkeypatch.setenv("WANDB_MODE", "offline")
    options = {"wandb": True, "project": "study"}
    export_all(runs, figure, tmp_path / "out", options)
    seen = {}
    for run, matrix in RUNS.items():
        log, records = wandb_records(tmp_path / "out" / "wandb" / run)
        (header,) = [r["run"] for r in records if r["type"] == "run"]
        assert header["display_name"] == run
        assert header["run_id"] == tracker_id(run, "abcdef0123456789")
        assert header["project"] == "study"
        assert header["config"]["update"]["spec"]["method_params"] == {"lambda": 100.0}
        history = [r["history"] for r in records if r["type"] == "history"]
        rows = {h["step"].get("num", 0): h["item"] for h in history}
        for t in range(2):
            for i in range(2):
                assert rows[t][f"acc/task{i}"] == pytest.approx(matrix[t][i])
        assert rows[1]["figures/acc_matrix._type"] == "image-file"  # the figure, at the last step
        assert (rows[1]["figures/acc_matrix.width"], rows[1]["figures/acc_matrix.height"]) == (8, 6)
        assert rows[1]["final/acc"] == pytest.approx(sum(matrix[1]) / 2)
        seen[run] = (log.name, len(history))
    export_all(runs, figure, tmp_path / "out", options)
    for run in RUNS:
        folder = tmp_path / "out" / "wandb" / run
        assert len(list(folder.glob("wandb/offline-run-*"))) == 1  # one offline run per clgrid run, not two
        log, records = wandb_records(folder)
        assert (log.name, len([r for r in records if r["type"] == "history"])) == seen[run]


def test_cli_verb_writes_the_receipt_the_rule_declares(runs, figure, tmp_path):
    pytest.importorskip("tensorboard")
    from clgrid import paths
    from clgrid.cli import main

    run = "split_digits/mlp/ewc/s1"
    receipt = tmp_path / paths.TRACKER_RECEIPT.format(benchmark="split_digits", backbone="mlp", method="ewc", seed=1)
    assert paths.producer_rule(receipt) == "export_run_trackers"
    assert main(["export-trackers", "--metrics", str(runs[run]), "--spec", json.dumps(SPEC), "--export",
                 json.dumps({"tensorboard": True, "mlflow": False}), "--figures", str(figure),
                 "--root", str(tmp_path / "trackers"), "--out", str(receipt)]) == 0
    done = json.loads(receipt.read_text())
    assert done["tracker_id"] == tracker_id(run, "abcdef0123456789")
    assert done["steps"] == 2 and done["figures"] == ["acc_matrix.png"]
    assert done["tensorboard"] == str(tmp_path / "trackers" / "tensorboard" / run)
    assert "mlflow" not in done and "wandb" not in done  # only the trackers the block turns on


def test_flat_config_strings_as_they_are_the_rest_as_json():
    from clgrid.trackers import flat_config

    assert flat_config({"method": "ewc", "params": {"lambda": 100.0, "k": None, "ids": [1, 2]}, "empty": {}}) == {
        "method": "ewc", "params.lambda": "100.0", "params.k": "null", "params.ids": "[1, 2]", "empty": "{}"}


def test_a_tracker_without_its_library_says_how_to_install_it(runs, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ImportError, match=r"export.wandb is on but the 'wandb' package is not installed: "
                                          r"pip install -e '.\[trackers\]'"):
        export_run(runs["split_digits/mlp/ewc/s1"], SPEC, [], {"wandb": True}, tmp_path / "out")
