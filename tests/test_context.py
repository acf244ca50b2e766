"""A job's world (clgrid.context.JobContext) on a benchmark with validation splits: ordinary runs record the
validation accuracy beside the test accuracy; a selection job (``evaluate_on: validation``) is evaluated on the
validation splits alone and never decodes a test array (its datasets refuse every test member); and without
``validation`` every file is the one main's code wrote."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from clgrid import jobs
from clgrid.context import JobContext, SelectionArrays, TestDataRefused, is_test_member
from clgrid.inprocess import run_cell, validated
from clgrid.io import load_npz, load_torch, read_json
from clgrid.plan import run_plan
from clgrid.spec import RunSpec
from tests.conftest import SCHEMA

TRAIN = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "epochs": 1, "batch_size": 32}
BENCHES = {
    "class_incremental": {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 2, "class_order": "random",
                          "scenario_seed": 1, "train": TRAIN},
    "permuted": {"dataset": "digits", "scenario": "permuted", "n_tasks": 2, "scenario_seed": 0, "train": TRAIN},
}


def _config(root: Path, bench: dict) -> dict:
    config = {"seeds": [0], "benchmarks": {"b": bench}, "backbones": {"mlp": {"arch": "mlp", "hidden": [32]}},
              "methods": ["naive"]}
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    return validated(root / "c.yaml", SCHEMA)


def _selection_job(config: dict, root: Path, out: Path) -> tuple[RunSpec, list[str]]:
    """The naive run of ``config`` as a selection candidate: its spec with evaluate_on validation (and no feature
    cache), trained and measured by the train and metrics jobs from the ordinary run's scenario and initial model."""
    steps = {s.rule: s for s in run_plan(config, "b", "mlp", "naive", 0)}
    train, metrics = steps["train"], steps["run_metrics"]
    spec = RunSpec.of({**train.spec, "evaluate_on": "validation", "feature_cache": False})

    def at(p):
        return str(root / Path(p).relative_to("results"))

    states = [str(out / f"task{t}" / "state.pt") for t in range(len(train.outputs["states"]))]
    evals = [str(out / f"task{t}" / "eval.json") for t in range(len(states))]
    jobs.train_tasks(spec, at(train.inputs["scenario"]), [at(p) for p in train.inputs["data"]],
                     at(train.inputs["prev"]), list(range(len(states))), states, evals)
    jobs.run_metrics(spec, at(metrics.inputs["init"]), evals, str(out / "metrics.json"), states)
    return spec, evals


def _recorded_npz_reads(monkeypatch) -> list[str]:
    """Every array member any code decodes from an .npz from now on (numpy's NpzFile.__getitem__)."""
    reads: list[str] = []
    original = np.lib.npyio.NpzFile.__getitem__

    def spy(self, key):
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", spy)
    return reads


@pytest.mark.parametrize("kind", sorted(BENCHES))
def test_selection_job_evaluates_on_validation_and_never_reads_test_data(kind, tmp_path, monkeypatch):
    config = _config(tmp_path, {**BENCHES[kind], "validation": {"fraction": 0.2}})
    ordinary = run_cell(config, "b", "mlp", "naive", 0, tmp_path)  # data, scenario, initial model and its eval
    reads = _recorded_npz_reads(monkeypatch)
    spec, evals = _selection_job(config, tmp_path, tmp_path / "cand")
    # The guard: no test member was decoded (the datasets were loaded without them), and none asked for.
    assert "x_train" in reads and not [k for k in reads if is_test_member(k)], reads

    scenario = read_json(tmp_path / "scenarios" / "b.json")
    data = load_npz(tmp_path / "data" / "digits.npz", ("x_train", "y_train"))
    model = JobContext(RunSpec.of({**spec.to_json(), "evaluate_on": None}), str(tmp_path / "scenarios" / "b.json"),
                       [str(tmp_path / "data" / "digits.npz")], 1).build_model()
    for t, path in enumerate(evals):
        record = read_json(path)
        assert record["evaluated_on"] == "validation"
        assert "unseen_acc" not in record and "validation" not in record
        model.load_state_dict(load_torch(str(Path(path).with_name("state.pt")))["model"])
        model.eval()
        for i, task in enumerate(scenario["tasks"]):
            # Accuracy on task i's validation split, by hand: its training images at val_idx, the task's own pixel
            # permutation applied, argmax over every class (class-IL) and over the task's classes (task-IL).
            x, y = data["x_train"][task["val_idx"]], data["y_train"][task["val_idx"]]
            if task["transform"]:
                x = x.reshape(len(x), 1, -1)[:, :, task["transform"]["permute_pixels"]].reshape(x.shape)
            with torch.no_grad():
                scores = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
            masked = np.full_like(scores, -np.inf)
            masked[:, task["classes"]] = scores[:, task["classes"]]
            assert record["acc"][i] == pytest.approx(100 * np.mean(scores.argmax(1) == y), abs=1e-9)
            assert record["acc_task_il"][i] == pytest.approx(100 * np.mean(masked.argmax(1) == y), abs=1e-9)
    # Training does not depend on what is evaluated: the candidate's rows are the ordinary run's validation rows.
    metrics = read_json(tmp_path / "cand" / "metrics.json")
    assert metrics["evaluated_on"] == "validation"
    assert metrics["acc_matrix"] == ordinary["validation"]["acc_matrix"]
    init = read_json(tmp_path / "init" / "b" / "mlp" / "s0" / "eval.json")
    assert metrics["init_acc"] == init["validation"]["acc"]  # the FWT baseline on the validation splits too
    # The evaluation job under a selection spec (an initial model evaluated on validation data alone).
    reads.clear()  # this test's own reads above (it built an ordinary context for the model) are no job's
    jobs.evaluate(spec, str(tmp_path / "scenarios" / "b.json"), [str(tmp_path / "data" / "digits.npz")],
                  str(tmp_path / "init" / "b" / "mlp" / "s0" / "model.pt"), str(tmp_path / "init_val.json"))
    init_val = read_json(tmp_path / "init_val.json")
    assert init_val["evaluated_on"] == "validation" and init_val["acc"] == init["validation"]["acc"]
    assert not [k for k in reads if is_test_member(k)], reads


def test_selection_job_refuses_test_data_when_asked(tmp_path):
    config = _config(tmp_path, {**BENCHES["class_incremental"], "validation": {"fraction": 0.2}})
    run_cell(config, "b", "mlp", "naive", 0, tmp_path)
    train = next(s for s in run_plan(config, "b", "mlp", "naive", 0) if s.rule == "train")
    spec = RunSpec.of({**train.spec, "evaluate_on": "validation", "feature_cache": False})
    scenario, data = str(tmp_path / "scenarios" / "b.json"), [str(tmp_path / "data" / "digits.npz")]
    ctx = JobContext(spec, scenario, data, 1)
    arrays = ctx.datasets["digits"]
    assert isinstance(arrays, SelectionArrays) and sorted(arrays) == ["classes", "x_train", "y_train"]
    # Negative controls: every way of asking for test data raises, naming the job as a selection job.
    for ask in (lambda: arrays["x_test"], lambda: arrays["y_test"], lambda: arrays["x_test_jpeg"],
                lambda: "x_test" in arrays, lambda: arrays.get("y_test"), lambda: ctx.task_data(0, "test")):
        with pytest.raises(TestDataRefused, match=r"b/mlp/naive/s0 is a selection job \(evaluate_on: validation\)"):
            ask()
    assert len(ctx.test_sets()["tasks"][0][1]) == len(read_json(scenario)["tasks"][0]["val_idx"])
    # The feature cache holds test features: a selection job is never given one.
    with pytest.raises(ValueError, match="selection job"):
        JobContext(spec, scenario, data, 1, features=str(tmp_path / "features.pt"))


def test_selection_job_on_a_benchmark_without_validation_says_what_to_add(tmp_path):
    config = _config(tmp_path, BENCHES["class_incremental"])
    run_cell(config, "b", "mlp", "naive", 0, tmp_path)
    train = next(s for s in run_plan(config, "b", "mlp", "naive", 0) if s.rule == "train")
    spec = RunSpec.of({**train.spec, "evaluate_on": "validation", "feature_cache": False})
    with pytest.raises(ValueError, match=r"add validation: \{fraction: 0.1\} to benchmarks.b"):
        JobContext(spec, str(tmp_path / "scenarios" / "b.json"), [str(tmp_path / "data" / "digits.npz")], 1)


def test_ordinary_run_on_a_validation_benchmark_records_the_validation_matrix(tmp_path):
    from clgrid.metrics import average_accuracy

    config = _config(tmp_path, {**BENCHES["class_incremental"], "validation": {"fraction": 0.2}})
    metrics = run_cell(config, "b", "mlp", "naive", 0, tmp_path)
    run = tmp_path / "runs" / "b" / "mlp" / "naive" / "s0"
    rows = [read_json(run / f"task{t}" / "eval.json") for t in range(2)]
    assert all(len(r["validation"]["acc"]) == len(r["validation"]["acc_task_il"]) == 2 for r in rows)
    assert all("evaluated_on" not in r for r in rows)
    validation = metrics["validation"]
    assert validation["acc_matrix"] == [r["validation"]["acc"] for r in rows]
    assert validation["acc_task_il_matrix"] == [r["validation"]["acc_task_il"] for r in rows]
    assert validation["acc"] == average_accuracy(validation["acc_matrix"])
    assert validation["acc"] == pytest.approx(sum(rows[1]["validation"]["acc"]) / 2)  # final row's mean
    assert validation["acc_matrix"] != metrics["acc_matrix"]  # the test matrix is still there, beside it
    assert "evaluated_on" not in metrics


def _canonical(obj):
    """A result's content with provenance reduced to what the code decides (config hash, seed, device): the git
    commit and package versions of the machine that wrote it are left out."""
    if isinstance(obj, dict):
        return {k: ({kk: v[kk] for kk in ("config_hash", "seed", "device")} if k == "provenance" else _canonical(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    return obj


MAIN_RUN_SHA256 = {
    # A 2-task split-digits naive run (held-out classes, random class order) written by main's code at c35ebc0,
    # before validation splits existed, on torch 2.14.1+cu130 (CPU), with provenance's git commit None (it enters
    # the state files, so metrics.json's checkpoint digests): write_json's bytes of each file's _canonical content.
    # Regenerate with the test's own loop, run on a checkout of that commit (git archive c35ebc0). Every file of
    # that run, state.pt included, was also compared byte for byte with the new code's: all equal.
    "init/tiny/mlp/s0/eval.json": "2b6c8d1eb68046fe48464201c91c92cd27284080f4f42f93fd58ee1b09357f8b",
    "runs/tiny/mlp/naive/s0/metrics.json": "e0474148e2f274648d1c5b9a51a3a8556764fa62580f3abd0bdb634b5d166e22",
    "runs/tiny/mlp/naive/s0/task0/eval.json": "a2d1d17c4b76a1ba953cb3fb02be72545d7cccbcb674b0cf5616c0f7d490c1bf",
    "runs/tiny/mlp/naive/s0/task1/eval.json": "af9e10244c3f8d011ab5b326ba5118f34572741c0fd9a619a3e0409a76472613",
    "scenarios/tiny.json": "0d82a6e3ac17234af125a13a13b1504462a2d9a97047fff74db037cdd2b7fb9c",
}


def test_run_without_validation_writes_mains_bytes(tmp_path, monkeypatch):
    if torch.__version__ != "2.14.1+cu130":
        pytest.skip(f"recorded with torch 2.14.1+cu130, this is {torch.__version__}: training floats may differ")
    monkeypatch.setattr("clgrid.io.git_commit", lambda *args, **kwargs: None)
    config = {"seeds": [0], "benchmarks": {"tiny": {"dataset": "digits", "scenario": "class_incremental",
                                                    "n_tasks": 2, "holdout_classes": 2, "class_order": "random",
                                                    "scenario_seed": 1, "train": TRAIN}},
              "backbones": {"mlp": {"arch": "mlp", "hidden": [32]}}, "methods": ["naive"]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_cell(validated(tmp_path / "c.yaml", SCHEMA), "tiny", "mlp", "naive", 0, tmp_path / "out")
    written = {}
    for path in sorted((tmp_path / "out").rglob("*.json")):
        if path.parent.name != "data":
            content = json.dumps(_canonical(json.loads(path.read_text())), indent=1, sort_keys=True) + "\n"
            written[str(path.relative_to(tmp_path / "out"))] = hashlib.sha256(content.encode()).hexdigest()
    assert written == MAIN_RUN_SHA256
