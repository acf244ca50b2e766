"""The grid's progress (clgrid.progress): each state read from a synthetic results tree and .snakemake/ folder laid
out as Snakemake 9 writes them, the text grid and its Markdown, and the plan of a real config."""

import json
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest

from clgrid import paths
from clgrid import progress as pg


def _run(method, seed, role="final", n_tasks=3, metrics=True):
    evals = tuple(paths.TASK_EVAL.format(benchmark="split_digits", backbone="mlp", method=method, seed=seed, task=t)
                  for t in range(n_tasks))
    out = paths.RUN_METRICS.format(benchmark="split_digits", backbone="mlp", method=method, seed=seed)
    return pg.PlannedRun("split_digits", "mlp", method, seed, role, evals, out if metrics else None)


def _write(root: Path, relative: str, content: dict) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def mark_incomplete(root: Path, output: str, max_len: int = 255) -> None:
    """A marker as Snakemake's file persistence writes it (snakemake/persistence/file.py, _record_path): the path's
    urlsafe base64, cut into folder levels of max_len - 1 characters, each but the last prefixed with '@'."""
    b64 = urlsafe_b64encode(output.encode()).decode()
    chunks = [b64[i:i + max_len - 1] for i in range(0, len(b64), max_len - 1)]
    parts = ["@" + c for c in chunks[:-1]] + [chunks[-1]]
    marker = root.joinpath(".snakemake", "incomplete", *parts)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"external_jobid": None}))


# An excerpt of a real Snakemake 9.27 log (a train job of the issue-22 demo grid, docs/progress.md), the shell
# line left out.
ERROR_LOG = """\
localrule train_split_digits_tasks0to2:
    input: results/scenarios/split_digits.json, results/data/digits.npz, results/init/split_digits/mlp/s1/model.pt
    output: results/runs/split_digits/mlp/ewc/s1/task0/state.pt, results/runs/split_digits/mlp/ewc/s1/task0/eval.json
    log: results/runs/split_digits/mlp/ewc/s1/train_tasks0to2.log
    jobid: 7
    wildcards: benchmark=split_digits, backbone=mlp, method=ewc, seed=1
[Sat Dec  5 07:33:41 2026]
Error in rule train_split_digits_tasks0to2:
    message: None
    jobid: 7
    input: results/scenarios/split_digits.json, results/data/digits.npz, results/init/split_digits/mlp/s1/model.pt
    output: results/runs/split_digits/mlp/ewc/s1/task0/state.pt, results/runs/split_digits/mlp/ewc/s1/task0/eval.json
    log: results/runs/split_digits/mlp/ewc/s1/train_tasks0to2.log (check log file(s) for error details)
    shell:
        clgrid train --spec '{}' > results/runs/split_digits/mlp/ewc/s1/train_tasks0to2.log 2>&1
        (command exited with non-zero exit code)
Removing output files of failed job train_split_digits_tasks0to2 since they might be corrupted:
results/runs/split_digits/mlp/ewc/s1/task0/state.pt
"""


@pytest.fixture
def tree(tmp_path):
    """Five runs, one per state: naive s0 done, replay s0 running (2 of 3 tasks, its last task's job started while
    Snakemake holds the folder), ewc s1 failed (the log above), lwf s0 diverged at task 1 (recorded), joint s0
    pending."""
    evals = {"acc": [50.0, 50.0, 50.0]}
    naive, replay, ewc, lwf, joint = (_run("naive", 0), _run("replay", 0), _run("ewc", 1), _run("lwf", 0),
                                      _run("joint", 0))
    for path in naive.task_evals:
        _write(tmp_path, path, evals)
    _write(tmp_path, naive.metrics, {"metrics": {"acc": 50.0}})
    for path in replay.task_evals[:2]:
        _write(tmp_path, path, evals)
    mark_incomplete(tmp_path, replay.task_evals[2].replace("eval.json", "state.pt"))
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.output.lock").write_text("")
    log_dir = tmp_path / ".snakemake" / "log"
    log_dir.mkdir(parents=True)
    (log_dir / "2026-12-05T073326.010535.snakemake.log").write_text(ERROR_LOG)
    _write(tmp_path, lwf.task_evals[0], evals)
    for path in lwf.task_evals[1:]:
        _write(tmp_path, path, {**evals, "diverged": {"task": 1, "step": 3, "loss": "nan"}})
    _write(tmp_path, lwf.metrics, {"metrics": {"acc": None}, "diverged": True, "diverged_at": {"task": 1}})
    return tmp_path, [naive, replay, ewc, lwf, joint]


def test_each_state_from_the_tree(tree):
    root, runs = tree
    cells = pg.collect(runs, root)
    assert [(c.run.method, c.state, c.tasks_done, c.n_tasks) for c in cells] == [
        ("naive", "done", 3, 3), ("replay", "running", 2, 3), ("ewc", "failed", 0, 3), ("lwf", "diverged", 3, 3),
        ("joint", "pending", 0, 3)]
    assert [c.text for c in cells] == ["3/3", "2/3 ▶", "0/3 ✗", "3/3 ⚠ div", "0/3"]
    assert cells[3].detail == "at task 1"


def test_a_marker_without_a_lock_is_an_interrupted_job(tree):
    root, runs = tree
    (root / ".snakemake" / "locks" / "0.output.lock").unlink()
    cell = pg.collect(runs, root)[1]
    assert cell.state == "failed" and "rerun-incomplete" in cell.detail


def test_long_paths_are_cut_into_marker_folders(tmp_path):
    long = "results/runs/split_digits/mlp/" + "ewc~val~ewc_lambda=1" * 12 + "/s0/task0/state.pt"
    mark_incomplete(tmp_path, long)
    assert any(p.name.startswith("@") for p in (tmp_path / ".snakemake" / "incomplete").iterdir())
    assert pg.incomplete_files(tmp_path) == {long: None}


def test_a_later_run_that_ran_the_job_clears_its_failure():
    failed_file = "results/runs/split_digits/mlp/ewc/s1/task0/eval.json"
    rerun_ok = ("localrule train_split_digits_tasks0to2:\n    output: " + failed_file + "\n    jobid: 3\n"
                "Finished jobid: 3 (Rule: train_split_digits_tasks0to2)\n")
    unrelated = "localrule progress:\n    output: results/tables/progress.md\n"
    assert failed_file in pg.failed_files([ERROR_LOG])
    assert failed_file in pg.failed_files([ERROR_LOG, unrelated])  # `snakemake progress` keeps it failed
    assert failed_file not in pg.failed_files([ERROR_LOG, rerun_ok])
    assert "results/scenarios/split_digits.json" not in pg.failed_files([ERROR_LOG])  # inputs are not outputs


def test_text_grid_and_summary(tree):
    root, runs = tree
    runs = runs + [_run("naive", 1), _run("ewc~val~ewc_lambda=1", 0, role="candidate", metrics=False)]
    text = pg.format_text(pg.collect(runs, root))
    lines = text.splitlines()
    assert lines[:7] == [
        "runs (6 runs: 1 done, 1 running, 1 failed, 1 diverged, 2 pending; tasks 8/18 evaluated)",
        "benchmark     backbone  method  s0         s1",
        "split_digits  mlp       naive   3/3        0/3",
        "split_digits  mlp       replay  2/3 ▶",
        "split_digits  mlp       ewc                0/3 ✗",
        "split_digits  mlp       lwf     3/3 ⚠ div",
        "split_digits  mlp       joint   0/3",
    ]
    assert lines[8].startswith("selection candidates (1 runs: 0 done, 0 running, 0 failed, 0 diverged, 1 pending")
    assert "total: 7 runs: 1 done, 1 running, 1 failed, 1 diverged, 3 pending; tasks 8/21 evaluated" in lines
    assert "failed   results/runs/split_digits/mlp/ewc/s1  (its job's error is in .snakemake/log/ and the job's log)" \
        in lines


def test_a_per_task_candidate_is_done_with_its_tasks(tmp_path):
    run = _run("ewc~pt~ewc_lambda=1", 0, role="candidate", metrics=False)
    for path in run.task_evals:
        _write(tmp_path, path, {"acc": [1.0]})
    assert pg.collect([run], tmp_path)[0].state == "done"


def test_markdown_has_the_same_cells(tree, tmp_path):
    root, runs = tree
    out = pg.write_markdown(pg.collect(runs, root), tmp_path / "progress.md")
    md = out.read_text()
    assert "| split_digits | mlp | replay | 2/3 ▶ |" in md
    assert "| split_digits | mlp | lwf | 3/3 ⚠ div |" in md
    assert "every task evaluated and the run's metrics not yet written" in md
    assert "- diverged: `results/runs/split_digits/mlp/lwf/s0` (at task 1)" in md
    assert "**5 runs: 1 done, 1 running, 1 failed, 1 diverged, 1 pending; tasks 8/15 evaluated**" in md


def test_all_tasks_without_metrics_is_pending_and_says_so(tmp_path):
    run = _run("naive", 0)
    for path in run.task_evals:
        _write(tmp_path, path, {"acc": [1.0]})
    cell = pg.collect([run], tmp_path)[0]
    assert (cell.state, cell.text) == ("pending", "3/3 …")


def test_plan_of_the_default_config(default_config):
    runs = pg.plan(default_config)
    # config/config.yaml: 2 benchmarks x 1 backbone x 5 methods x 3 seeds, 5 tasks each, no selections
    assert len(runs) == 30 and {r.role for r in runs} == {"final"}
    assert all(len(r.task_evals) == 5 for r in runs)
    assert runs[0].task_evals[0] == "results/runs/split_digits/mlp/naive/s0/task0/eval.json"


def test_plan_lists_selection_candidates_apart():
    from tests.conftest import REPO

    config = pg.load_config([REPO / "config" / "experiments" / "sweep_digits.yaml"])
    runs = pg.plan(config)
    candidates = [r for r in runs if r.role == "candidate"]
    assert candidates and all("~" in r.method for r in candidates)
    assert len({(r.benchmark, r.backbone, r.method, r.seed) for r in runs}) == len(runs)


def test_slurm_states_of_running_cells(tree, tmp_path):
    """A cluster job's marker holds its SLURM id (Snakemake's executor registers the job when it submits it)."""
    root, runs = tree
    fake = tmp_path / "squeue"
    fake.write_text("#!/bin/sh\nprintf '4711 PENDING\\n4712 RUNNING\\n4713 PENDING\\n'\n")
    fake.chmod(0o755)
    jobs = pg.slurm_jobs(str(fake))
    assert jobs == {"4711": "PENDING", "4712": "RUNNING", "4713": "PENDING"}
    marker = next(p for p in (root / ".snakemake" / "incomplete").rglob("*") if p.is_file())
    marker.write_text(json.dumps({"external_jobid": "4711"}))
    cells = pg.collect(runs, root, jobs)
    assert (cells[1].state, cells[1].detail) == ("running", "cluster job 4711 PENDING")
    text = pg.format_text(cells, jobs)
    assert "SLURM (squeue --me): 2 pending, 1 running" in text
    assert "running  results/runs/split_digits/mlp/replay/s0  (cluster job 4711 PENDING)" in text
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    assert pg.slurm_jobs(str(broken)) is None


def test_cli_prints_the_grid(tree, capsys):
    from clgrid.cli import main
    from tests.conftest import DEFAULT_CONFIG

    root, _ = tree
    md = root / "progress.md"
    assert main(["progress", "--configfile", str(DEFAULT_CONFIG), "--directory", str(root), "--markdown",
                 str(md)]) == 0
    out = capsys.readouterr().out
    # the tree's runs are the default grid's, whose runs have 5 tasks: naive s0's 3 evaluations are 3 of 5
    assert "split_digits     mlp       naive   3/5        0/5    0/5" in out
    assert "split_digits     mlp       replay  2/5 ▶      0/5    0/5" in out
    assert "total: 30 runs: 0 done, 1 running, 1 failed, 1 diverged, 27 pending" in out
    assert "| split_digits | mlp | ewc | 0/5 | 0/5 ✗ | 0/5 |" in md.read_text()


def test_the_rules_that_make_the_new_tables():
    assert paths.producer_rule("results/tables/progress.md") == "progress"
    assert paths.producer_rule("results/tables/all_runs.parquet") == "tidy_table"
    assert paths.producer_rule("results/tables/all_runs.csv") == "tidy_table"
    assert paths.producer_rule("results/tables/runs.csv") == "tables"


def test_a_failed_upstream_job_fails_the_runs_that_need_it(tmp_path):
    """A broken dataset fails prepare_dataset: every run of a benchmark on it reads failed, others pending."""
    log = ("Error in rule prepare_dataset, jobid: 4\n    output: results/data/digits.npz, results/data/digits.json\n"
           "    log: results/logs/prepare_dataset/digits.log (check log file(s) for error details)\n")
    (tmp_path / ".snakemake" / "log").mkdir(parents=True)
    (tmp_path / ".snakemake" / "log" / "2026-12-05T080000.000000.snakemake.log").write_text(log)
    on_digits = pg.PlannedRun("split_digits", "mlp", "naive", 0, "final", ("a/task0/eval.json",), None,
                              ("results/scenarios/split_digits.json", "results/data/digits.npz"))
    elsewhere = pg.PlannedRun("split_cifar", "mlp", "naive", 0, "final", ("b/task0/eval.json",), None,
                              ("results/scenarios/split_cifar.json", "results/data/cifar10.npz"))
    assert [c.state for c in pg.collect([on_digits, elsewhere], tmp_path)] == ["failed", "pending"]


def test_plan_names_each_runs_upstream_files(default_config):
    run = pg.plan(default_config)[0]
    assert run.upstream == ("results/scenarios/split_digits.json", "results/data/digits.npz")
    assert pg.PlannedRun.from_json(json.loads(json.dumps(run.to_json()))) == run


def test_watch_redraws_until_interrupted(tree, capsys, monkeypatch):
    import time

    from clgrid.cli import main
    from tests.conftest import DEFAULT_CONFIG

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(pg, "slurm_jobs", lambda: None)  # this machine's squeue would sleep while it waits
    monkeypatch.setattr(time, "sleep", interrupt)
    root, _ = tree
    assert main(["progress", "--configfile", str(DEFAULT_CONFIG), "--directory", str(root), "--watch", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("\033[2J\033[H") and out.count("total: 30 runs") == 1


def test_a_diverged_task_before_the_metrics_job(tmp_path):
    """on_divergence: record writes the task's eval.json marked diverged; the cell says so before metrics.json."""
    run = _run("ewc", 0)
    _write(tmp_path, run.task_evals[0], {"acc": [90.0]})
    _write(tmp_path, run.task_evals[1], {"acc": [None], "diverged": {"task": 1, "step": 5, "loss": "inf"}})
    cell = pg.collect([run], tmp_path)[0]
    assert (cell.state, cell.text, cell.detail) == ("diverged", "2/3 ⚠ div", "at task 1")
