"""A tiny random CLIP through the real DAG: zero-shot, finetune and LwF, trained whole and as image_fc."""

import json
import shutil

import pytest
import torch

from tests.conftest import REPO, copy_workflow
from tests.test_workflow import snakemake

pytestmark = pytest.mark.e2e
RUNS = "results/runs/split_digits/{backbone}/{method}/s0"


@pytest.fixture(scope="module")
def clip_grid(tmp_path_factory):
    root = copy_workflow(tmp_path_factory.mktemp("clip"))
    shutil.copytree(REPO / "tests" / "fixtures", root / "tests" / "fixtures")
    snakemake(root, "--cores", "2", "--configfile", "tests/fixtures/clip_tiny.yaml")
    return root


def _state(root, backbone, method, task):
    return torch.load(root / RUNS.format(backbone=backbone, method=method) / f"task{task}/state.pt",
                      weights_only=False)["model"]


def test_every_run_has_metrics_and_figures(clip_grid):
    for backbone in ("clip_whole", "clip_image_fc"):
        for method in ("zeroshot", "finetune", "lwf"):
            metrics = json.loads((clip_grid / RUNS.format(backbone=backbone, method=method) / "metrics.json").read_text())
            assert len(metrics["acc_matrix"]) == 2
        assert (clip_grid / f"results/figures/split_digits/{backbone}/summary.png").exists()


def test_zero_shot_row_never_changes(clip_grid):
    for backbone in ("clip_whole", "clip_image_fc"):
        metrics = json.loads((clip_grid / RUNS.format(backbone=backbone, method="zeroshot") / "metrics.json").read_text())
        assert metrics["acc_matrix"][0] == metrics["acc_matrix"][1] == metrics["init_acc"]
        init = torch.load(clip_grid / f"results/init/split_digits/{backbone}/s0/model.pt", weights_only=False)["model"]
        final = _state(clip_grid, backbone, "zeroshot", 1)
        assert all(torch.equal(init[k], final[k]) for k in init)


def test_train_modes_hold_in_the_dag(clip_grid):
    init = torch.load(clip_grid / "results/init/split_digits/clip_image_fc/s0/model.pt", weights_only=False)["model"]
    final = _state(clip_grid, "clip_image_fc", "finetune", 1)
    assert not any(k.startswith("head.text.") for k in final)  # image_fc drops the text tower
    assert not torch.equal(init["head.linear.weight"], final["head.linear.weight"])
    assert not torch.equal(init["backbone.conv1.weight"], final["backbone.conv1.weight"])
    whole = _state(clip_grid, "clip_whole", "finetune", 1)
    whole_init = torch.load(clip_grid / "results/init/split_digits/clip_whole/s0/model.pt", weights_only=False)["model"]
    assert not torch.equal(whole_init["head.text.token_embedding.weight"], whole["head.text.token_embedding.weight"])
    assert torch.equal(whole_init["head.logit_scale"], whole["head.logit_scale"])
