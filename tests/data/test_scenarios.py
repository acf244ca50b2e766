"""Scenarios: disjoint class splits, permuted tasks with task 0 unpermuted, deterministic in the scenario seed."""

import numpy as np
import pytest

from clgrid.data.scenarios import apply_transform, build_scenario

Y_TRAIN = np.repeat(np.arange(10), 20)
Y_TEST = np.repeat(np.arange(10), 5)


def test_class_incremental_splits_classes_in_order():
    s = build_scenario("b", {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 5,
                             "class_order": "sorted", "scenario_seed": 0}, Y_TRAIN, Y_TEST)
    assert [t["classes"] for t in s["tasks"]] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    all_train = np.concatenate([t["train_idx"] for t in s["tasks"]])
    assert sorted(all_train) == list(range(200))  # a partition of the training set
    for t in s["tasks"]:
        assert set(Y_TRAIN[t["train_idx"]]) == set(t["classes"])
        assert set(Y_TEST[t["test_idx"]]) == set(t["classes"])


def test_random_class_order_depends_only_on_scenario_seed():
    cfg = {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 2, "class_order": "random"}
    a = build_scenario("b", {**cfg, "scenario_seed": 1}, Y_TRAIN, Y_TEST)
    b = build_scenario("b", {**cfg, "scenario_seed": 1}, Y_TRAIN, Y_TEST)
    c = build_scenario("b", {**cfg, "scenario_seed": 2}, Y_TRAIN, Y_TEST)
    assert a == b and a["tasks"][0]["classes"] != c["tasks"][0]["classes"]


def test_permuted_tasks_are_fixed_permutations_with_identity_first():
    s = build_scenario("p", {"dataset": "digits", "scenario": "permuted", "n_tasks": 3, "scenario_seed": 0},
                       Y_TRAIN, Y_TEST)
    assert s["tasks"][0]["transform"] is None
    perms = [t["transform"]["permute_pixels"] for t in s["tasks"][1:]]
    assert all(sorted(p) == list(range(64)) for p in perms) and perms[0] != perms[1]
    x = np.arange(2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
    moved = apply_transform(x, s["tasks"][1]["transform"])
    np.testing.assert_array_equal(moved.reshape(2, -1), x.reshape(2, -1)[:, perms[0]])


def test_uneven_class_split_is_rejected():
    with pytest.raises(ValueError, match="n_tasks=3"):
        build_scenario("b", {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 3,
                             "scenario_seed": 0}, Y_TRAIN, Y_TEST)
