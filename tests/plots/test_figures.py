"""Accuracy-matrix figures keep every task when a run was recorded as diverged (NaN accuracies)."""

import math

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from clgrid.plots.figures import _mean_matrix, plot_acc_matrices  # noqa: E402


def _cells(method, acc):
    return [{"method": method, "seed": 0, "after_task": t, "task": i, "acc": acc(t, i)} for t in range(3) for i in range(3)]


def test_a_fully_diverged_method_keeps_its_rows_as_blank_cells():
    cells = pd.DataFrame(_cells("naive", lambda t, i: 100.0 * (i <= t))
                         + _cells("diverged", lambda t, i: 50.0 if t == 0 else math.nan))
    matrix = _mean_matrix(cells[cells["method"] == "diverged"], 3)
    assert matrix.shape == (3, 3) and matrix.iloc[0, 0] == 50.0 and matrix.iloc[1:].isna().all().all()
    fig = plot_acc_matrices(cells, ["naive", "diverged"], "test")
    assert [len(ax.get_yticklabels()) for ax in fig.axes if ax.get_title() in ("naive", "diverged")] == [3, 3]
