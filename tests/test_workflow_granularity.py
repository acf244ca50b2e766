"""Job granularity: one task per job, jobs of 2 + 1 + 2 tasks, one job for the whole run — the same bytes.

Every per-task output (state.pt, eval.json), each run's metrics.json and the tables must not depend on how tasks
are grouped into jobs (``tasks_per_job``); neither may a rerun of one task's target.
"""

import re

import pytest
import yaml

from tests.conftest import REPO, copy_workflow
from tests.test_workflow import planned_jobs, snakemake

pytestmark = pytest.mark.e2e

FIXTURE = REPO / "tests" / "fixtures" / "granularity.yaml"


def run_grid(root, tasks_per_job):
    config = yaml.safe_load(FIXTURE.read_text())
    config["benchmarks"]["split_digits"]["tasks_per_job"] = tasks_per_job
    copy_workflow(root)
    (root / "grid.yaml").write_text(yaml.safe_dump(config))
    target = "results/tables/summary.csv"
    jobs = planned_jobs(root, target, "--configfile", "grid.yaml")
    snakemake(root, target, "--cores", "2", "--configfile", "grid.yaml")
    outputs = {p.relative_to(root): p.read_bytes() for p in sorted((root / "results").rglob("*"))
               if p.is_file() and re.search(r"(state\.pt|eval\.json|metrics\.json|\.csv|\.sha256)$", p.name)}
    return jobs, outputs


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    return {k: run_grid(tmp_path_factory.mktemp(f"tasks_per_job_{k}"), k) for k in (1, 2, 5)}


def training_jobs(planned):
    return {rule: n for rule, n in planned.items() if rule.startswith("train_")}


def test_jobs_follow_tasks_per_job(grids):
    assert training_jobs(grids[1][0]) == {"train_task": 5 * 2}
    assert training_jobs(grids[2][0]) == {"train_split_digits_tasks0to1": 2, "train_split_digits_tasks2to2": 2,
                                          "train_split_digits_tasks3to4": 2}
    assert training_jobs(grids[5][0]) == {"train_split_digits_tasks0to4": 2}
    others = {rule: n for rule, n in grids[1][0].items() if rule not in training_jobs(grids[1][0])}
    assert all(grids[k][0][rule] == n for k in (2, 5) for rule, n in others.items())


def test_outputs_are_byte_identical_whatever_the_granularity(grids):
    per_task = grids[1][1]
    assert sum(1 for p in per_task if p.name == "state.pt") == 10 and any(p.name == "summary.csv" for p in per_task)
    for k in (2, 5):
        assert grids[k][1].keys() == per_task.keys()
        differ = [str(p) for p in per_task if grids[k][1][p] != per_task[p]]
        assert not differ, f"tasks_per_job {k}: {differ}"


def test_each_task_keeps_its_own_log(grids, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tasks_per_job_50"
    run = root / "results/runs/split_digits/mlp/ewc/s0"
    for t in range(5):
        log = (run / f"task{t}/train.log").read_text()
        assert f"task {t} epoch 2/2" in log and f"task {t + 1} epoch" not in log
    assert "task 4 epoch 2/2" in (run / "train_tasks0to4.log").read_text()


def test_rerunning_one_task_target_rebuilds_it_identically(grids, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tasks_per_job_50"
    target = "results/runs/split_digits/mlp/ewc/s0/task1/state.pt"
    before = (root / target).read_bytes()
    snakemake(root, target, "--cores", "1", "--configfile", "grid.yaml", "--forcerun", target)
    assert (root / target).read_bytes() == before
