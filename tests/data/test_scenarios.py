"""Scenarios on small fixtures: class counts, disjointness, holdouts, sequences, transforms applied alike to
train and test, task-IL masking against a hand computation, and augmentation that never touches test data."""

import numpy as np
import pytest
import torch

from clgrid.data.scenarios import apply_transform, build_scenario, select, task_arrays
from clgrid.data.transforms import make_augment, normalization, random_crop
from clgrid.evaluate import accuracy, accuracy_row

Y_TRAIN = np.repeat(np.arange(10), 20)
Y_TEST = np.repeat(np.arange(10), 5)


def _data(n_classes=10, per_train=20, per_test=5, shape=(1, 8, 8), dtype=np.float32, seed=0, names=None):
    rng = np.random.default_rng(seed)
    y_train = np.repeat(np.arange(n_classes), per_train)
    y_test = np.repeat(np.arange(n_classes), per_test)
    make = (lambda n: rng.integers(0, 256, (n, *shape), dtype=np.uint8)) if dtype == np.uint8 else \
        (lambda n: rng.random((n, *shape), dtype=np.float32))
    return {"x_train": make(len(y_train)), "y_train": y_train, "x_test": make(len(y_test)), "y_test": y_test,
            "classes": np.array(names or [str(c) for c in range(n_classes)])}


DIGITS = {"digits": _data()}


def test_class_incremental_splits_classes_in_order():
    s = build_scenario("b", {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 5,
                             "class_order": "sorted", "scenario_seed": 0}, DIGITS)
    assert [t["classes"] for t in s["tasks"]] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    all_train = np.concatenate([t["train_idx"] for t in s["tasks"]])
    assert sorted(all_train) == list(range(200))  # a partition of the training set
    for t in s["tasks"]:
        assert set(Y_TRAIN[t["train_idx"]]) == set(t["classes"])
        assert set(Y_TEST[t["test_idx"]]) == set(t["classes"])
        assert len(t["train_idx"]) == 2 * 20 and len(t["test_idx"]) == 2 * 5
    assert s["n_classes"] == 10 and s["headline"] == "class_il" and s["holdout"] is None


def test_task_incremental_is_the_same_split_with_task_il_headline():
    cfg = {"dataset": "digits", "n_tasks": 5, "scenario_seed": 0}
    ci = build_scenario("b", {**cfg, "scenario": "class_incremental"}, DIGITS)
    ti = build_scenario("b", {**cfg, "scenario": "task_incremental"}, DIGITS)
    assert ci["tasks"] == ti["tasks"] and ti["headline"] == "task_il"


def test_random_class_order_depends_only_on_scenario_seed():
    cfg = {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 2, "class_order": "random"}
    a = build_scenario("b", {**cfg, "scenario_seed": 1}, DIGITS)
    b = build_scenario("b", {**cfg, "scenario_seed": 1}, DIGITS)
    c = build_scenario("b", {**cfg, "scenario_seed": 2}, DIGITS)
    assert a == b and a["tasks"][0]["classes"] != c["tasks"][0]["classes"]


def test_explicit_class_order_must_be_a_permutation():
    cfg = {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 2, "scenario_seed": 0}
    s = build_scenario("b", {**cfg, "class_order": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]}, DIGITS)
    assert s["tasks"][0]["classes"] == [9, 8, 7, 6, 5]
    with pytest.raises(ValueError, match="not a permutation"):
        build_scenario("b", {**cfg, "class_order": [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]}, DIGITS)


def test_holdout_classes_are_never_in_a_training_split():
    s = build_scenario("b", {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 4, "scenario_seed": 3,
                             "class_order": "random", "holdout_classes": 2}, DIGITS)
    held = s["holdout"]["classes"]
    assert len(held) == 2
    for t in s["tasks"]:
        assert not set(Y_TRAIN[t["train_idx"]]) & set(held)
        assert not set(t["classes"]) & set(held)
    assert set(Y_TEST[s["holdout"]["test_idx"]]) == set(held) and len(s["holdout"]["test_idx"]) == 10
    # Domain-incremental with a holdout: every task trains on the other classes only.
    d = build_scenario("p", {"dataset": "digits", "scenario": "permuted", "n_tasks": 3, "scenario_seed": 0,
                             "holdout_classes": 3}, DIGITS)
    for t in d["tasks"]:
        assert set(Y_TRAIN[t["train_idx"]]) == set(range(7))
    assert d["holdout"]["classes"] == [7, 8, 9]


def test_uneven_class_split_is_rejected():
    with pytest.raises(ValueError, match="n_tasks=3"):
        build_scenario("b", {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 3,
                             "scenario_seed": 0}, DIGITS)


def test_permuted_tasks_apply_the_same_permutation_to_train_and_test():
    s = build_scenario("p", {"dataset": "digits", "scenario": "permuted", "n_tasks": 3, "scenario_seed": 0}, DIGITS)
    assert s["tasks"][0]["transform"] is None
    perms = [t["transform"]["permute_pixels"] for t in s["tasks"][1:]]
    assert all(sorted(p) == list(range(64)) for p in perms) and perms[0] != perms[1]
    x = np.arange(2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
    moved = apply_transform(x, s["tasks"][1]["transform"])
    np.testing.assert_array_equal(moved.reshape(2, -1), x.reshape(2, -1)[:, perms[0]])
    for split in ("train", "test"):
        xs, ys = task_arrays(DIGITS, s, 2, split)
        raw = DIGITS["digits"][f"x_{split}"]
        np.testing.assert_array_equal(xs.reshape(len(xs), -1), raw.reshape(len(raw), -1)[:, perms[1]])
        np.testing.assert_array_equal(ys, DIGITS["digits"][f"y_{split}"])


def test_rotated_tasks_rotate_train_and_test_alike():
    data = {"img": _data(shape=(1, 9, 9), dtype=np.uint8)}
    s = build_scenario("r", {"dataset": "img", "scenario": "rotated", "n_tasks": 2, "angles": [0, 90],
                             "scenario_seed": 0}, data)
    assert s["tasks"][0]["transform"] is None and s["tasks"][1]["transform"] == {"rotate_degrees": 90.0}
    for split in ("train", "test"):
        xs, _ = task_arrays(data, s, 1, split)
        # 90° counter-clockwise on a square image is an exact transpose-and-flip (no interpolation).
        np.testing.assert_array_equal(xs, np.rot90(data["img"][f"x_{split}"], k=1, axes=(2, 3)))
    drawn = build_scenario("r", {"dataset": "img", "scenario": "rotated", "n_tasks": 4, "scenario_seed": 5}, data)
    angles = [t["transform"]["rotate_degrees"] for t in drawn["tasks"][1:]]
    assert drawn["tasks"][0]["transform"] is None and all(0 <= a < 180 for a in angles) and len(set(angles)) == 3


def test_dataset_sequence_disjoint_and_shared_label_spaces():
    data = {"a": _data(n_classes=3, names=["x", "y", "z"], seed=1), "b": _data(n_classes=4, seed=2)}
    s = build_scenario("seq", {"datasets": ["a", "b"], "scenario": "dataset_sequence"}, data)
    assert [t["classes"] for t in s["tasks"]] == [[0, 1, 2], [3, 4, 5, 6]] and s["n_classes"] == 7
    assert s["class_names"] == ["x", "y", "z", "0", "1", "2", "3"] and s["tasks"][0]["class_names"] == ["x", "y", "z"]
    x, y = task_arrays(data, s, 1, "train")
    np.testing.assert_array_equal(y, data["b"]["y_train"] + 3)
    np.testing.assert_array_equal(x, data["b"]["x_train"])
    shared = build_scenario("seq", {"datasets": ["a", "b"], "scenario": "dataset_sequence", "label_space": "shared"},
                            data)
    assert shared["n_classes"] == 4 and shared["tasks"][1]["classes"] == [0, 1, 2, 3]
    np.testing.assert_array_equal(task_arrays(data, shared, 1, "test")[1], data["b"]["y_test"])


def test_sequence_of_different_shapes_needs_image_size_and_conforms():
    data = {"grey": _data(shape=(1, 8, 8), dtype=np.uint8), "rgb": _data(shape=(3, 16, 16), dtype=np.uint8)}
    with pytest.raises(ValueError, match="image_size"):
        build_scenario("seq", {"datasets": ["grey", "rgb"], "scenario": "dataset_sequence"}, data)
    s = build_scenario("seq", {"datasets": ["grey", "rgb"], "scenario": "dataset_sequence", "image_size": 12,
                               "channels": 3}, data)
    assert s["input_shape"] == [3, 12, 12]
    for t in range(2):
        x, _ = task_arrays(data, s, t, "train")
        assert x.shape[1:] == (3, 12, 12) and x.dtype == np.uint8
    x0, _ = task_arrays(data, s, 0, "train")
    np.testing.assert_array_equal(x0[:, 0], x0[:, 2])  # grey repeated into RGB


def test_eval_sets_are_split_by_the_tasks_classes():
    data = {"digits": DIGITS["digits"], "shifted": _data(per_train=0, per_test=7, seed=9)}
    s = build_scenario("b", {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 5, "scenario_seed": 0,
                             "eval_sets": {"shift": {"dataset": "shifted"}}}, data)
    parts = s["eval_sets"]["shift"]["tasks"]
    assert len(parts) == 5
    for task, part in zip(s["tasks"], parts):
        assert set(data["shifted"]["y_test"][part["test_idx"]]) == set(task["classes"]) and len(part["test_idx"]) == 14


def test_task_il_masking_against_a_hand_computation():
    # Four test samples of task {2, 3}; logits over 4 classes.
    scores = torch.tensor([[5.0, 0.0, 1.0, 2.0],    # class-IL: 0 (wrong); task-IL: 3 (wrong, label 2)
                           [0.0, 9.0, 3.0, 1.0],    # class-IL: 1 (wrong); task-IL: 2 (right)
                           [0.0, 0.0, 1.0, 4.0],    # class-IL: 3 (right); task-IL: 3 (right)
                           [7.0, 8.0, 0.5, 0.4]])   # class-IL: 1 (wrong); task-IL: 2 (wrong, label 3)
    labels = torch.tensor([2, 2, 3, 3])
    class_il, task_il = accuracy(lambda x: x, scores, labels, classes=[2, 3])
    assert class_il == pytest.approx(25.0) and task_il == pytest.approx(50.0)
    row = accuracy_row(lambda x: x, [(scores, labels, [2, 3]), (scores, torch.tensor([0, 1, 0, 1]), [0, 1])])
    # Second set, labels 0,1,0,1: class-IL argmax 0,1,3,1 (3 of 4); task-IL over {0, 1}: 0,1,0 (tie: first),1.
    assert row["class_il"] == [25.0, 75.0] and row["task_il"] == [50.0, 100.0]


def test_augmentation_changes_training_batches_only():
    gen = torch.Generator().manual_seed(0)
    augment = make_augment({"augment": "crop_flip", "crop_padding": 4}, gen)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    test_copy = x.clone()
    out = augment(x)
    assert out.shape == x.shape and out.dtype == torch.uint8 and not torch.equal(out, x)
    assert torch.equal(x, test_copy)  # the stored data (and any test set) is never modified in place
    assert make_augment({"augment": "none"}, gen)(x) is x
    # A crop at offset (p, p) is the identity; at (0, 0) it shifts the image down-right by p with zero fill.
    p = 2
    same = random_crop(x[:2], p, torch.tensor([[p, p], [p, p]]))
    assert torch.equal(same, x[:2])
    shifted = random_crop(x[:1], p, torch.tensor([[0, 0]]))
    assert torch.equal(shifted[0, :, p:, p:], x[0, :, :-p, :-p]) and int(shifted[0, :, :p].sum()) == 0


def test_normalization_statistics():
    x = np.zeros((10, 3, 4, 4), np.uint8)
    x[:, 1] = 255
    x[:5, 2] = 255
    stats = normalization({"normalize": "auto"}, x)
    assert stats["mean"] == [0.0, 1.0, 0.5] and stats["std"][2] == pytest.approx(0.5)
    assert normalization({"normalize": "none"}, x) is None
    assert normalization({}, x.astype(np.float32)) is None  # float datasets (digits) are used as they are
    assert normalization({"normalize": {"mean": [0.1], "std": [0.2]}}, x) == {"mean": [0.1], "std": [0.2]}


def test_select_applies_offset_and_indices():
    data = _data(n_classes=3)
    x, y = select(data, "test", [0, 5, 10], 7, None, [1, 8, 8])
    np.testing.assert_array_equal(y, data["y_test"][[0, 5, 10]] + 7)


# --- validation splits (benchmark validation: {fraction}) ------------------------------------------------------


def _uneven(seed=0):
    """10 classes with 5..23 training samples (class c has 5 + 2c): per-class rounding shows."""
    data = _data(seed=seed)
    y_train = np.repeat(np.arange(10), [5 + 2 * c for c in range(10)])
    data["y_train"] = y_train
    data["x_train"] = np.random.default_rng(seed).random((len(y_train), 1, 8, 8), dtype=np.float32)
    return data


VALIDATION_BENCHES = {
    "class_incremental": {"dataset": "d", "scenario": "class_incremental", "n_tasks": 5, "class_order": "random"},
    "class_incremental_holdout": {"dataset": "d", "scenario": "class_incremental", "n_tasks": 4,
                                  "class_order": "random", "holdout_classes": 2},
    "permuted": {"dataset": "d", "scenario": "permuted", "n_tasks": 3},
    "rotated": {"dataset": "d", "scenario": "rotated", "n_tasks": 3},
    "dataset_sequence": {"datasets": ["d", "e"], "scenario": "dataset_sequence"},
}


@pytest.mark.parametrize("kind", sorted(VALIDATION_BENCHES))
def test_validation_split_is_never_trained_on_and_takes_the_fraction_of_every_class(kind):
    data = {"d": _uneven(0), "e": _uneven(1)}
    bench = {**VALIDATION_BENCHES[kind], "scenario_seed": 4}
    plain = build_scenario("b", bench, data)
    s = build_scenario("b", {**bench, "validation": {"fraction": 0.2}}, data)
    assert s["validation"] == {"fraction": 0.2} and "validation" not in plain
    for task, before in zip(s["tasks"], plain["tasks"]):
        labels = data[task["dataset"]]["y_train"]
        own = np.arange(len(labels)) if before["train_idx"] is None else np.asarray(before["train_idx"])
        train, val = np.asarray(task["train_idx"]), np.asarray(task["val_idx"])
        assert not set(train) & set(val)  # no validation index in the training split
        assert sorted([*train, *val]) == sorted(own)  # together: the task's training samples as before
        for c in task["classes"]:
            n = int(np.sum(labels[own] == c - task["label_offset"]))
            # class c of 5 + 2c samples: round(0.2 n), at least 1 (5 -> 1, 7 -> 1, 9 -> 2, 11 -> 2, 13 -> 3, ...)
            assert np.sum(labels[val] == c - task["label_offset"]) == max(1, round(0.2 * n))
        # Every other draw is as without validation: classes, transforms, test indices.
        assert {k: v for k, v in task.items() if k not in ("train_idx", "val_idx")} == \
               {k: v for k, v in before.items() if k != "train_idx"}
    assert s["holdout"] == plain["holdout"] and s["eval_sets"] == plain["eval_sets"]
    if kind in ("permuted", "rotated"):  # one draw per dataset: an image set aside is set aside in every task
        assert all(t["val_idx"] == s["tasks"][0]["val_idx"] for t in s["tasks"])


def test_validation_split_worked_counts():
    # 20 samples a class: fraction 0.1 -> 2, 0.25 -> 5, 0.125 -> round(2.5) = 2 (Python rounds half to even),
    # 0.01 -> round(0.2) = 0, raised to the minimum of 1.
    bench = {"dataset": "d", "scenario": "class_incremental", "n_tasks": 2, "scenario_seed": 0}
    for fraction, per_class in ((0.1, 2), (0.25, 5), (0.125, 2), (0.01, 1)):
        s = build_scenario("b", {**bench, "validation": {"fraction": fraction}}, {"d": _data()})
        val = np.concatenate([t["val_idx"] for t in s["tasks"]])
        assert np.bincount(Y_TRAIN[val], minlength=10).tolist() == [per_class] * 10, fraction


def test_validation_split_depends_only_on_scenario_seed():
    bench = {"dataset": "d", "scenario": "permuted", "n_tasks": 2, "validation": {"fraction": 0.1}}
    a = build_scenario("b", {**bench, "scenario_seed": 1}, {"d": _data()})
    b = build_scenario("b", {**bench, "scenario_seed": 1}, {"d": _data()})
    c = build_scenario("b", {**bench, "scenario_seed": 2}, {"d": _data()})
    assert a == b
    assert a["tasks"][0]["val_idx"] != c["tasks"][0]["val_idx"]


def test_validation_fraction_that_empties_a_class_names_the_field():
    data = _data()
    data["y_train"] = np.concatenate([[0], np.repeat(np.arange(1, 10), 20)])[: len(data["y_train"])]
    with pytest.raises(ValueError, match=r"sample of class 0 of 'd'.*benchmarks\.b\.validation\.fraction"):
        build_scenario("b", {"dataset": "d", "scenario": "class_incremental", "n_tasks": 2,
                             "validation": {"fraction": 0.1}}, {"d": data})


MAIN_SCENARIO_SHA256 = {
    # build_scenario on scikit-learn's digits without `validation`, by main's code at c35ebc0 (before validation
    # splits existed), as write_json writes it (indent 1, sorted keys): the new code must write the same bytes.
    "ci": "618ce20fdecc73ef8968166cea8f1a5cc1e66a17a82d933f03c81e999f2af27e",
    "ci_hold": "3d5c948752e5d405158529df22d70e43c1228cd7a8ef6221cd066c5fb9488b00",
    "perm": "936c30d5239adadfb5c8dd5748b4c6c10b7f4675eb23caa6a4d922089dd8493c",
    "rot": "9b47f171de6300c300b3d174d6efccd035828c6cd69660cb3ff8939246887a43",
    "seq": "6fb42803538cb778020fdff8cae338893e157fbbf8fb51eb17047d65d41be6aa",
}
MAIN_BENCHES = {
    "ci": {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 5, "class_order": "random",
           "scenario_seed": 3, "holdout_classes": 0},
    "ci_hold": {"dataset": "digits", "scenario": "class_incremental", "n_tasks": 4, "class_order": "random",
                "scenario_seed": 1, "holdout_classes": 2},
    "perm": {"dataset": "digits", "scenario": "permuted", "n_tasks": 3, "scenario_seed": 0},
    "rot": {"dataset": "digits", "scenario": "rotated", "n_tasks": 3, "scenario_seed": 5},
    "seq": {"datasets": ["digits", "digits"], "scenario": "dataset_sequence", "label_space": "shared",
            "scenario_seed": 0},
}


def test_scenario_without_validation_is_byte_identical_to_mains(tmp_path):
    import hashlib
    import json

    from clgrid.data.datasets import ARRAYS, prepare_dataset
    from clgrid.io import load_npz

    prepare_dataset("digits", str(tmp_path / "digits.npz"))
    data = {"digits": load_npz(tmp_path / "digits.npz", ARRAYS)}
    for name, bench in MAIN_BENCHES.items():
        text = json.dumps(build_scenario(name, bench, data), indent=1, sort_keys=True) + "\n"
        assert hashlib.sha256(text.encode()).hexdigest() == MAIN_SCENARIO_SHA256[name], name
        with_val = build_scenario(name, {**bench, "validation": {"fraction": 0.1}}, data)
        assert with_val != json.loads(text)
