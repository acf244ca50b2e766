"""A tiny random CLIP through the real DAG: zero-shot, finetune and LwF, trained whole and as image_fc."""

import json
import shutil

import pytest
import torch

from tests.conftest import REPO, copy_workflow
from tests.test_workflow import snakemake

pytestmark = pytest.mark.e2e
RUNS = "results/runs/split_digits/{backbone}/{method}/s0"


def _run_fixture(tmp_path_factory, name):
    root = copy_workflow(tmp_path_factory.mktemp(name))
    shutil.copytree(REPO / "tests" / "fixtures", root / "tests" / "fixtures")
    snakemake(root, "--cores", "2", "--configfile", f"tests/fixtures/{name}.yaml")
    return root


@pytest.fixture(scope="module")
def clip_grid(tmp_path_factory):
    return _run_fixture(tmp_path_factory, "clip_tiny")


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


@pytest.fixture(scope="module")
def flava_grid(tmp_path_factory):
    return _run_fixture(tmp_path_factory, "flava_tiny")


def test_flava_frozen_vs_partial_with_cross_run_cka(flava_grid):
    runs = "results/runs/split_digits/flava_tiny/{}/s0/task1/state.pt"
    init = torch.load(flava_grid / "results/init/split_digits/flava_tiny/s0/model.pt", weights_only=False)["model"]
    frozen = torch.load(flava_grid / runs.format("frozen"), weights_only=False)["model"]
    last = torch.load(flava_grid / runs.format("last_child"), weights_only=False)["model"]
    backbone = [k for k in init if k.startswith("backbone.")]
    assert all(torch.equal(init[k], frozen[k]) for k in backbone)
    assert all(torch.equal(init[k], last[k]) for k in backbone if not k.startswith("backbone.pooler."))
    assert not torch.equal(init["backbone.pooler.dense.weight"], last["backbone.pooler.dense.weight"])
    compare = "results/compare/split_digits/flava_tiny/{}/s0/cka.json"
    last_vs_frozen = json.loads((flava_grid / compare.format("last_child__vs__frozen")).read_text())
    assert last_vs_frozen["layers"] == ["backbone.encoder.layer.0", "backbone.encoder.layer.1", "head"]
    # Both runs keep the encoder frozen: its layers are the same weights, so CKA is 1 there after every task.
    for layer in ("backbone.encoder.layer.0", "backbone.encoder.layer.1"):
        assert last_vs_frozen["cka_per_layer"][layer] == pytest.approx([1.0, 1.0], abs=1e-9)
    assert len(last_vs_frozen["cka_layer_maps"]) == 2
    unfrozen_vs_frozen = json.loads((flava_grid / compare.format("unfrozen__vs__frozen")).read_text())
    assert unfrozen_vs_frozen["cka_per_layer"]["backbone.encoder.layer.1"][1] < 1.0


NAMES = {"digits_low": ["zero", "one", "two"], "digits_mid": ["three", "four", "five"],
         "digits_high": ["six", "seven", "eight"]}


@pytest.fixture(scope="module")
def mtil_grid(tmp_path_factory):
    """Three imported datasets cut from digits (classes 0-2, 3-5, 6-8 with their names), then the MTIL fixture."""
    import numpy as np
    from sklearn.datasets import load_digits

    root = copy_workflow(tmp_path_factory.mktemp("mtil"))
    shutil.copytree(REPO / "tests" / "fixtures", root / "tests" / "fixtures")
    digits = load_digits()
    x = (digits.images * 255 / 16).round().astype(np.uint8)[:, None]
    (root / "data_in").mkdir()
    for first, name in zip((0, 3, 6), NAMES):
        keep = np.flatnonzero((digits.target >= first) & (digits.target < first + 3))
        train, test = keep[: int(0.7 * len(keep))], keep[int(0.7 * len(keep)):]
        np.savez(root / "data_in" / f"{name}.npz", x_train=x[train], y_train=digits.target[train] - first,
                 x_test=x[test], y_test=digits.target[test] - first, classes=np.array(NAMES[name]))
    snakemake(root, "--cores", "2", "--configfile", "tests/fixtures/clip_mtil_tiny.yaml")
    return root


def test_mtil_sequence_with_zero_shot_finetune_and_zscl(mtil_grid):
    runs = "results/runs/seq3/clip/{}/s0"
    metrics = {m: json.loads((mtil_grid / runs.format(m) / "metrics.json").read_text())
               for m in ("zeroshot", "finetune", "zscl")}
    for m, result in metrics.items():
        assert len(result["acc_matrix"]) == 3 and all(len(row) == 3 for row in result["acc_matrix"])
        for key in ("mtil_transfer", "mtil_avg", "mtil_last", "mtil_transfer_top5", "mtil_avg_top5", "mtil_last_top5"):
            assert key in result["metrics"], (m, sorted(result["metrics"]))
        # Transfer: per dataset the mean accuracy before it is learned (zero-shot), then the mean over datasets 2..T,
        # each dataset scored among its own classes (ZSCL's protocol): the task-IL matrix, not the class-IL one.
        r = result["acc_matrix_task_il"]
        assert result["metrics"]["mtil_transfer"] == pytest.approx((r[0][1] + (r[0][2] + r[1][2]) / 2) / 2)
        assert result["metrics"]["mtil_last"] == pytest.approx(sum(r[2]) / 3)
        r5 = result["acc_matrix_top5_task_il"]
        assert result["metrics"]["mtil_last_top5"] == pytest.approx(sum(r5[2]) / 3)
        # among fewer classes a label is found at least as often; top-5 at least as often as top-1
        assert all(w >= c for rw, rc in zip(r, result["acc_matrix"]) for w, c in zip(rw, rc))
        assert all(t5 >= t1 for row5, row1 in zip(r5, r) for t5, t1 in zip(row5, row1))
        assert all(t5 >= t1 for row5, row1 in zip(result["acc_matrix_top5"], result["acc_matrix"])
                   for t5, t1 in zip(row5, row1))
    zero = metrics["zeroshot"]
    assert zero["acc_matrix"][0] == zero["acc_matrix"][1] == zero["acc_matrix"][2] == zero["init_acc"]
    assert metrics["zscl"]["acc_matrix"] != metrics["finetune"]["acc_matrix"]
    # The class names of every dataset reach the zero-shot head: one text embedding per class of the sequence.
    init = torch.load(mtil_grid / "results/init/seq3/clip/s0/model.pt", weights_only=False)["model"]
    assert init["head.prompts"].shape[0] == 9


def test_zscl_reference_images_come_from_the_reference_dataset(mtil_grid):
    import numpy as np

    state = torch.load(mtil_grid / "results/runs/seq3/clip/zscl/s0/task2/state.pt", weights_only=False)["method"]
    reference = state["reference_x"].numpy()
    assert reference.shape == (40, 1, 8, 8)
    digits = np.load(mtil_grid / "results/data/digits.npz")["x_train"]  # digits ships as floats in [0, 1]
    assert reference.dtype == digits.dtype
    rows = {row.tobytes() for row in digits}
    assert all(r.tobytes() in rows for r in reference)
    # Reference sentences from the caption file: one teacher text feature per line.
    assert state["teacher_text"].shape[0] == 5
