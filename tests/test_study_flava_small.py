"""config/studies/flava_small.yaml (the FLAVA thesis reduced, docs/studies/flava.md) plans as two stages: a CIFAR-10
pretraining run per seed, then every Flowers-17 run from its seed's pretrained weights, with cross-run CKA."""

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_workflow
from tests.test_workflow import planned_jobs, tasks_trained

STUDY = REPO / "config/studies/flava_small.yaml"


def test_the_reduced_flava_study_plans_its_two_stages(tmp_path):
    config = yaml.safe_load(STUDY.read_text())
    arrays = [Path(d["npz"]) for d in config["datasets"].values()]
    if not all(p.exists() for p in arrays):
        pytest.skip("the shared arrays (absolute paths in the study config) are not on this machine")
    root = copy_workflow(tmp_path)
    (root / "config/studies").mkdir(exist_ok=True)
    (root / "config/studies/flava_small.yaml").write_text(STUDY.read_text())
    jobs = planned_jobs(root, "--configfile", "config/studies/flava_small.yaml", "config/data/shared.yaml")
    seeds = len(config["seeds"])
    assert jobs["init_model_from_run"] == seeds  # stage 2 starts from stage 1, once per seed
    # stage 1: joint on CIFAR-10 (1 task); stage 2: 9 pretrained runs and 1 from scratch, 4 tasks each
    assert jobs["run_metrics"] == (1 + 9 + 1) * seeds and tasks_trained(jobs) == (1 + 10 * 4) * seeds
    assert jobs["compare_runs"] == 6 * seeds  # partly frozen and unfrozen vs frozen, per method
    assert "download_dataset" not in jobs and jobs["prepare_dataset"] == 2
