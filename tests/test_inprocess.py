"""Every registered method runs through the DAG's own job functions: state saved by one task's job and
loaded by the next (a fresh model and method each time, as in separate processes), evaluated on every task."""

import pytest

from clgrid.inprocess import run_cell, validated
from clgrid.methods import METHODS
from tests.conftest import DEFAULT_CONFIG, SCHEMA


@pytest.fixture(scope="module")
def short_config():
    config = validated(DEFAULT_CONFIG, SCHEMA)
    config["benchmarks"] = {"split_digits": config["benchmarks"]["split_digits"]}
    config["method_params"]["ogd"]["ogd_samples"] = 20  # the default 200 costs ~6 s of Gram-Schmidt per task
    return config


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_runs_task_by_task_through_the_jobs(method, short_config, tmp_path):
    metrics = run_cell(short_config, "split_digits", "mlp", method, 0, tmp_path)
    matrix = metrics["acc_matrix"]
    assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
    # Each task is learnt when it is trained, far above the 10 % chance of the 10-way head. Not higher: strong
    # regularisers (EWC λ=100, SI, OGD) legitimately trade plasticity on later tasks for stability.
    assert all(matrix[t][t] > 40 for t in range(5)), matrix
