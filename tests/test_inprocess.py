"""Every registered method runs through the DAG's own job functions: state saved by one task's job and
loaded by the next (a fresh model and method each time, as in separate processes), evaluated on every task."""

import pytest

from clgrid.inprocess import run_cell, validated
from clgrid.methods import GENERIC_METHODS
from tests.conftest import DEFAULT_CONFIG, SCHEMA


@pytest.fixture(scope="module")
def short_config():
    config = validated(DEFAULT_CONFIG, SCHEMA)
    config["benchmarks"] = {"split_digits": config["benchmarks"]["split_digits"]}
    config["method_params"]["ogd"]["ogd_samples"] = 20  # the default 200 costs ~6 s of Gram-Schmidt per task
    return config


@pytest.mark.parametrize("method", sorted(GENERIC_METHODS))
def test_method_runs_task_by_task_through_the_jobs(method, short_config, tmp_path):
    metrics = run_cell(short_config, "split_digits", "mlp", method, 0, tmp_path)
    matrix = metrics["acc_matrix"]
    assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
    # Each task is learnt when it is trained, far above the 10 % chance of the 10-way head. Not higher: strong
    # regularisers (EWC λ=100, SI, OGD) legitimately trade plasticity on later tasks for stability.
    assert all(matrix[t][t] > 40 for t in range(5)), matrix


def test_frozen_backbone_with_nearest_mean_head_cannot_forget(short_config, tmp_path):
    # Frozen features and stored class means: a class's prediction region changes only when new means arrive,
    # and on split_digits those are other classes', so accuracy on old tasks can only drop by confusions
    # with new classes; the matrix is checked against that, and against the definition of forgetting.
    config = {**short_config, "backbones": {"mlp_ncm": {"arch": "mlp", "hidden": [256, 256], "head": "ncm",
                                                         "head_hidden": [256]}}}
    config["method_params"] = {**config["method_params"], "naive": {**config["method_params"]["naive"], "freeze": "all"}}
    frozen = run_cell(config, "split_digits", "mlp_ncm", "naive", 0, tmp_path)
    matrix = frozen["acc_matrix"]
    # Random ReLU features of 8x8 digits still separate the classes by their means.
    assert frozen["metrics"]["acc"] > 70, matrix
    # Old classes' means never move, so task 0's accuracy never rises after task 0 and never falls below the
    # accuracy of the same means among all 10 classes (the last row).
    assert all(matrix[t][0] <= matrix[0][0] for t in range(5))
    naive = run_cell(short_config, "split_digits", "mlp", "naive", 0, tmp_path / "naive")
    assert frozen["metrics"]["forgetting"] < naive["metrics"]["forgetting"] / 2


DIGITS_2_TASKS = {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 2,
                  "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "epochs": 1, "batch_size": 32}}
TINY_CLIP = {"arch": "clip", "model": "ViT-Tiny-8", "model_config": "tests/fixtures/ViT-Tiny-8.json",
             "pretrained": None}


def _write_config(root, name, backbones, methods, **extra):
    import yaml

    config = {"seeds": [0], "benchmarks": {"split_digits": DIGITS_2_TASKS}, "backbones": backbones,
              "methods": methods, **extra}
    (root / name).write_text(yaml.safe_dump(config))
    return name


def _reference_dataset(root):
    """digits' arrays imported as a dataset of its own: a ZSCL reference set outside the benchmark's datasets."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images * 255 / 16).round().astype(np.uint8)[:, None]
    (root / "data_in").mkdir()
    np.savez(root / "data_in" / "digits_ref.npz", x_train=x[:1000], y_train=digits.target[:1000], x_test=x[1000:],
             y_test=digits.target[1000:])
    return {"digits_ref": {"npz": "data_in/digits_ref.npz", "n_classes": 10}}


@pytest.mark.e2e
def test_run_cell_writes_the_dags_files_byte_for_byte(tmp_path, monkeypatch):
    # Every generic method on an MLP and ZSCL (reference images from a dataset outside the benchmark) on a tiny
    # CLIP, through Snakemake and through run_cell from the same plan: every file run_cell writes is the DAG's,
    # byte for byte (both run in the copy, so provenance's git commit is the same: none).
    import shutil

    from tests.conftest import REPO, copy_workflow
    from tests.test_workflow import snakemake

    root = copy_workflow(tmp_path)
    shutil.copytree(REPO / "tests" / "fixtures", root / "tests" / "fixtures")
    runs = {_write_config(root, "mlp.yaml", {"mlp": {"arch": "mlp", "hidden": [64]}}, sorted(GENERIC_METHODS),
                          method_params={"ogd": {"ogd_samples": 20}}): ("mlp", sorted(GENERIC_METHODS)),
            _write_config(root, "clip.yaml", {"clip": TINY_CLIP}, ["zscl"], datasets=_reference_dataset(root),
                          method_params={"zscl": {"reference_dataset": "digits_ref", "reference_size": 40,
                                                  "reference_batch_size": 8}}): ("clip", ["zscl"])}
    for config_file, (backbone, methods) in runs.items():
        targets = [f"results/runs/split_digits/{backbone}/{m}/s0/metrics.json" for m in methods]
        snakemake(root, *targets, "--cores", "2", "--configfile", config_file)  # targets first: --configfile takes all
    monkeypatch.chdir(root)
    for config_file, (backbone, methods) in runs.items():
        config = validated(config_file, SCHEMA)
        for method in methods:
            run_cell(config, "split_digits", backbone, method, 0, root / "inprocess", features=True)
    written = sorted(p.relative_to(root / "inprocess") for p in (root / "inprocess").rglob("*") if p.is_file())
    assert any(p.name == "digits_ref.npz" for p in written)
    assert len([p for p in written if p.name == "metrics.json"]) == len(GENERIC_METHODS) + 1
    differ = [str(p) for p in written if (root / "results" / p).read_bytes() != (root / "inprocess" / p).read_bytes()]
    assert not differ, differ
