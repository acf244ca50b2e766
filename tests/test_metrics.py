"""Metric functions against a hand-computed accuracy matrix."""

import numpy as np
import pytest

from clgrid import metrics

# Worked example (3 tasks). R[t, i] = accuracy on task i after training task t.
#            task0 task1 task2
R = [[90.0, 10.0, 20.0],   # after task 0
     [95.0, 80.0, 30.0],   # after task 1 (task 0 improved: backward transfer)
     [50.0, 70.0, 85.0]]   # after task 2
B = [10.0, 5.0, 25.0]      # initial model's accuracy per task
# ACC        = (50 + 70 + 85) / 3                         = 68.333...
# A_t        = 90, (95 + 80) / 2 = 87.5, 68.333...
# avg. inc.  = (90 + 87.5 + 68.333) / 3                    = 81.944...
# forgetting = mean(max(90, 95) - 50, max(10, 80) - 70)    = mean(45, 10) = 27.5   (Chaudhry et al. 2018)
# BWT        = mean(50 - 90, 70 - 80)                      = -25                   (uses R[i, i], not the max)
# FWT        = mean(R[0,1] - b1, R[1,2] - b2) = mean(10 - 5, 30 - 25) = 5


def test_worked_example():
    assert metrics.average_accuracy(R) == pytest.approx(205 / 3)
    np.testing.assert_allclose(metrics.accuracy_seen(R), [90, 87.5, 205 / 3])
    assert metrics.average_incremental_accuracy(R) == pytest.approx((90 + 87.5 + 205 / 3) / 3)
    np.testing.assert_allclose(metrics.forgetting_per_task(R), [45, 10])
    assert metrics.average_forgetting(R) == pytest.approx(27.5)
    assert metrics.backward_transfer(R) == pytest.approx(-25)
    assert metrics.forward_transfer(R, B) == pytest.approx(5)


def test_no_forgetting_when_nothing_changes():
    r = np.array([[80, 0, 0], [80, 70, 0], [80, 70, 60]], dtype=float)
    assert metrics.average_forgetting(r) == 0
    assert metrics.backward_transfer(r) == 0
    assert metrics.average_accuracy(r) == 70


def test_total_forgetting_is_minus_bwt():
    # Naive class-incremental: each task learnt perfectly, then lost entirely.
    r = 100 * np.eye(4)
    assert metrics.average_forgetting(r) == 100
    assert metrics.backward_transfer(r) == -100
    assert metrics.average_accuracy(r) == 25


def test_single_task_and_bad_shapes():
    assert metrics.all_metrics([[70.0]], [10.0]) == {
        "acc": 70.0, "avg_inc_acc": 70.0, "forgetting": 0.0, "bwt": 0.0, "fwt": 0.0}
    with pytest.raises(ValueError, match="T×T"):
        metrics.average_accuracy([[1.0, 2.0]])
    with pytest.raises(ValueError, match="one entry per task"):
        metrics.forward_transfer(R, [1.0, 2.0])


def test_mtil_transfer_avg_last_by_hand():
    # Transfer: dataset 1 before it is learnt: R[0,1] = 10; dataset 2: mean(R[0,2], R[1,2]) = mean(20, 30) = 25;
    #           mean over datasets (per-dataset mean first, as ZSCL's table): (10 + 25) / 2 = 17.5.
    #           (A plain mean of the three upper-triangle cells would give 20: the weighting matters.)
    # Avg:      all nine cells: (90+10+20+95+80+30+50+70+85) / 9 = 530 / 9.
    # Last:     the final row: (50 + 70 + 85) / 3.
    assert metrics.mtil_transfer(R) == pytest.approx(17.5)
    assert metrics.mtil_avg(R) == pytest.approx(530 / 9)
    assert metrics.mtil_last(R) == pytest.approx(205 / 3)
    assert metrics.mtil_metrics(R) == {"mtil_transfer": pytest.approx(17.5), "mtil_avg": pytest.approx(530 / 9),
                                       "mtil_last": pytest.approx(205 / 3)}


def test_mtil_of_a_model_that_never_changes():
    # A frozen zero-shot model has the same row after every task: Transfer = mean of zero-shot accuracies of
    # datasets 2..T, Avg = Last = mean of all of them (ZSCL's zero-shot row: Avg equals Last, 65.3 / 65.3).
    zero_shot = np.array([60.0, 40.0, 80.0, 20.0])
    r = np.tile(zero_shot, (4, 1))
    assert metrics.mtil_transfer(r) == pytest.approx(zero_shot[1:].mean())
    assert metrics.mtil_avg(r) == pytest.approx(zero_shot.mean()) == metrics.mtil_last(r)
    assert metrics.mtil_transfer([[70.0]]) == 0.0


def test_run_metrics_records_mtil_for_dataset_sequences(tmp_path):
    import json

    from clgrid import jobs

    def write(name, obj):
        path = tmp_path / name
        path.write_text(json.dumps(obj))
        return str(path)

    prov = {"device": "cpu"}
    init = write("init.json", {"acc": [10.0, 5.0, 25.0], "acc_task_il": [10.0, 5.0, 25.0], "provenance": prov})
    evals = [write(f"e{t}.json", {"after_task": t, "acc": row, "provenance": prov}) for t, row in enumerate(R)]
    spec = {"benchmark": "seq", "backbone": "clip", "method": "zscl", "seed": 0, "backbone_cfg": {"arch": "clip"},
            "device": "cpu", "benchmark_cfg": {"scenario": "dataset_sequence", "datasets": ["a", "b", "c"]}}
    jobs.run_metrics(spec, init, evals, str(tmp_path / "m.json"))
    recorded = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert recorded["mtil_transfer"] == pytest.approx(17.5)
    assert recorded["mtil_avg"] == pytest.approx(530 / 9)
    assert recorded["mtil_last"] == pytest.approx(205 / 3) == recorded["acc"]
    # with each dataset's own labels (task-IL rows present), MTIL scores each dataset among its own classes
    within = [[v + 1.0 for v in row] for row in R]
    evals_within = [write(f"w{t}.json", {"after_task": t, "acc": row, "acc_task_il": within[t], "provenance": prov})
                    for t, row in enumerate(R)]
    jobs.run_metrics(spec, init, evals_within, str(tmp_path / "mw.json"))
    recorded = json.loads((tmp_path / "mw.json").read_text())["metrics"]
    assert recorded["mtil_transfer"] == pytest.approx(18.5) and recorded["mtil_last"] == pytest.approx(205 / 3 + 1)
    spec["benchmark_cfg"] = {"scenario": "class_incremental"}
    jobs.run_metrics(spec, init, evals, str(tmp_path / "m2.json"))
    assert "mtil_transfer" not in json.loads((tmp_path / "m2.json").read_text())["metrics"]


def test_top5_accuracy_by_hand():
    """Scores of 3 samples over 7 classes: the label is in the top 5 for samples 0 and 2, only top-1 for 0."""
    import torch

    from clgrid.evaluate import accuracy_row

    scores = torch.tensor([[7., 6, 5, 4, 3, 2, 1],     # label 0: top-1 and top-5
                           [7., 6, 5, 4, 3, 2, 1],     # label 6: lowest score, outside the top 5
                           [1., 2, 3, 4, 5, 6, 7]])    # label 2: 5th highest, inside the top 5
    labels = torch.tensor([0, 6, 2])
    row = accuracy_row(lambda x: x, [(scores, labels, [0, 1, 2, 3, 4, 5, 6])])
    assert row["class_il"] == [pytest.approx(100 / 3)]
    assert row["top5"] == [pytest.approx(200 / 3)]
    # Fewer than 5 classes: top-5 is every class, so 100 %.
    assert accuracy_row(lambda x: x[:, :3], [(scores, labels.clamp(max=2), [0, 1, 2])])["top5"] == [100.0]


def test_task_il_top5_ranks_only_the_tasks_classes_by_hand():
    """MTIL's top-5 ranks a dataset's own classes: with the task's classes 2..6, label 6 (lowest of all seven) is
    5th among them, so inside its top 5; over all classes it is not."""
    import torch

    from clgrid.evaluate import accuracy_row

    scores = torch.tensor([[7., 6, 5, 4, 3, 2, 1],     # label 6: 7th of 7, 5th of the task's 2..6
                           [7., 6, 5, 4, 3, 2, 1]])    # label 2: top-1 among 2..6
    labels = torch.tensor([6, 2])
    row = accuracy_row(lambda x: x, [(scores, labels, [2, 3, 4, 5, 6])], task_top5=True)
    assert row["top5"] == [50.0] and row["top5_task_il"] == [100.0]
    assert row["class_il"] == [0.0] and row["task_il"] == [50.0]
    assert "top5_task_il" not in accuracy_row(lambda x: x, [(scores, labels, [2, 3, 4, 5, 6])])
