"""Deep metric learning through the real DAG: class-incremental tasks with a growing k-NN index, held-out classes
added to the index without training, retrieval metrics for every run, and metric learning in the same table as
the classifier-based methods."""

import json

import pandas as pd
import pytest
import torch

from tests.conftest import REPO, copy_workflow
from tests.test_workflow import snakemake

pytestmark = pytest.mark.e2e
RUN = "results/runs/split_digits/mlp/{}/s0"
METHODS = ("naive", "replay", "dml_epshn", "dml_arcface", "dml_index_only")


@pytest.fixture(scope="module")
def dml_grid(tmp_path_factory):
    import shutil

    root = copy_workflow(tmp_path_factory.mktemp("dml"))
    shutil.copytree(REPO / "tests" / "fixtures", root / "tests" / "fixtures")
    snakemake(root, "--cores", "2", "--configfile", "tests/fixtures/dml_digits.yaml")
    return root


def _metrics(root, method):
    return json.loads((root / RUN.format(method) / "metrics.json").read_text())


def test_every_run_records_retrieval_on_seen_and_unseen_classes(dml_grid):
    for method in METHODS:
        metrics = _metrics(dml_grid, method)
        assert len(metrics["acc_matrix"]) == 4 and len(metrics["retrieval"]) == 4
        for key in ("p_at_1_seen", "p_at_1_unseen", "p_at_1_drop", "map_at_r_seen", "nmi_unseen", "recall_at_8_seen"):
            assert 0 <= abs(metrics["metrics"][key]) <= 100, (method, key)
        final = metrics["retrieval"][-1]
        assert metrics["metrics"]["p_at_1_drop"] == pytest.approx(final["seen"]["p_at_1"] - final["unseen"]["p_at_1"])


def test_the_index_holds_each_task_once_its_task_is_trained_and_never_the_held_out_classes(dml_grid):
    scenario = json.loads((dml_grid / "results/scenarios/split_digits.json").read_text())
    held = set(scenario["holdout"]["classes"])
    assert held == {8, 9}
    for method in ("dml_epshn", "dml_index_only"):
        for t in range(4):
            state = torch.load(dml_grid / RUN.format(method) / f"task{t}/state.pt", weights_only=True)
            labels = set(state["method"]["index_labels"].tolist())
            seen = {c for task in scenario["tasks"][: t + 1] for c in task["classes"]}
            assert labels == seen and not labels & held


def test_index_only_variant_trains_task_0_only(dml_grid):
    states = [torch.load(dml_grid / RUN.format("dml_index_only") / f"task{t}/state.pt", weights_only=True)
              for t in range(4)]
    for later in states[1:]:
        assert all(torch.equal(states[0]["model"][k], later["model"][k]) for k in states[0]["model"])
        assert all(torch.equal(states[0]["method"]["embedder"][k], later["method"]["embedder"][k])
                   for k in states[0]["method"]["embedder"])
    trained = torch.load(dml_grid / RUN.format("dml_epshn") / "task3/state.pt", weights_only=True)
    assert not torch.equal(states[0]["model"]["backbone.block1.0.weight"], trained["model"]["backbone.block1.0.weight"])


def test_metric_learning_sits_in_the_summary_table_beside_the_classifiers(dml_grid):
    table = pd.read_csv(dml_grid / "results/tables/summary.csv")
    assert set(METHODS) <= set(table["method"])
    assert {"p_at_1_seen_mean", "p_at_1_unseen_mean", "p_at_1_drop_mean", "acc_mean"} <= set(table.columns)
    md = (dml_grid / "results/tables/summary.md").read_text()
    assert "P@1 unseen" in md and "dml_epshn" in md


def test_an_index_that_only_grows_does_not_forget(dml_grid):
    # The index-only run's embedding never changes after task 0, so every stored entry stays exact: an old task can
    # only lose the few test samples that a newer class's entries now sit closer to.
    index_only = _metrics(dml_grid, "dml_index_only")["metrics"]
    assert index_only["forgetting"] < 5
    assert index_only["acc"] > _metrics(dml_grid, "naive")["metrics"]["acc"] + 20


def test_an_approximate_index_records_its_recall_against_exact_search(dml_grid):
    for row in _metrics(dml_grid, "dml_arcface")["retrieval"]:
        assert 0 < row["index_recall_at_10_vs_exact"] <= 1
    assert all("index_recall_at_10_vs_exact" not in row for row in _metrics(dml_grid, "dml_epshn")["retrieval"])
