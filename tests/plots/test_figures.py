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


def test_the_forgetting_figure_is_the_same_bytes_every_time_and_leaves_numpys_generator_alone():
    # seaborn's strip-plot jitter draws from NumPy's global generator: unseeded, the same results gave different PNGs.
    import io

    import numpy as np

    from clgrid.plots.figures import method_palette, plot_forgetting

    runs = pd.DataFrame({"method": ["naive"] * 3 + ["replay"] * 3, "seed": [0, 1, 2] * 2,
                         "forgetting": [90.0, 91.0, 92.0, 5.0, 6.0, 7.0]})
    pngs = []
    for caller_seed in (1, 2):
        np.random.seed(caller_seed)
        fig = plot_forgetting(runs, method_palette(["naive", "replay"]), "test")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        pngs.append(buffer.getvalue())
        np.random.seed(caller_seed)
        expected_next = np.random.random()
        np.random.seed(caller_seed)
        plot_forgetting(runs, method_palette(["naive", "replay"]), "test")
        assert np.random.random() == expected_next  # the caller's generator state is restored
    assert pngs[0] == pngs[1]


def test_the_summary_page_of_a_benchmark_with_one_method_has_its_curve_and_its_bars():
    # A pretraining benchmark runs one method (joint): the bottom row once split one column into nothing.
    from clgrid.plots.figures import method_palette, plot_summary

    cells = pd.DataFrame([{**c, "benchmark": "b", "backbone": "cnn"} for c in _cells("joint", lambda t, i: 60.0)])
    runs = pd.DataFrame({"method": ["joint"] * 2, "seed": [0, 1], "forgetting": [0.0, 1.0]})
    fig = plot_summary(cells, runs, method_palette(["joint"]), "one method")
    assert [ax.get_title() for ax in fig.axes].count("joint") == 1
    assert len(fig.axes) == 3  # the matrix, the accuracy curve, the forgetting bars
