"""Faults a multi-day study meets, injected into real Snakemake runs of a reduced grid: the whole `snakemake` killed
mid-grid (SIGINT, then SIGKILL) and rerun with --rerun-incomplete, a full disk, a read-only results folder; and the
determinism guard (--cores 1 and --cores 2 give byte-identical results).

The reduced grid (tests/fixtures/faults.yaml) is the default grid's split_digits with two methods and two seeds:
20 training jobs, the default grid's rules down to the tables.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, copy_workflow
from tests.test_workflow import snakemake

pytestmark = pytest.mark.e2e
CONFIG = "tests/fixtures/faults.yaml"
TARGET = "results/tables/summary.csv"
TABLES = ("runs.csv", "acc_matrix.csv", "summary.csv", "summary.md", "summary.tex")
N_TRAIN_JOBS = 20


def _workflow(root: Path) -> Path:
    copy_workflow(root)
    shutil.copytree(REPO / "tests" / "fixtures", root / "tests" / "fixtures")
    return root


def _results(root: Path) -> dict[str, bytes]:
    """Every checkpoint, evaluation, metrics file and table of a run, by relative path."""
    files = [p for p in (root / "results").rglob("*") if p.is_file() and p.suffix in (".pt", ".json", ".csv", ".md", ".tex")
             and "/data/" not in str(p)]
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reduced grid run once, uninterrupted, on 2 cores: the numbers every fault test must reproduce."""
    root = _workflow(tmp_path_factory.mktemp("reference"))
    snakemake(root, "--cores", "2", TARGET, "--configfile", CONFIG)
    return root


def test_cores_1_and_cores_2_give_byte_identical_results(reference, tmp_path):
    root = _workflow(tmp_path)
    snakemake(root, "--cores", "1", TARGET, "--configfile", CONFIG)
    ours, theirs = _results(root), _results(reference)
    assert sorted(ours) == sorted(theirs) and len(ours) > 2 * N_TRAIN_JOBS
    assert [name for name in ours if ours[name] != theirs[name]] == []


def _train_jobs(log: str) -> tuple[dict[int, str], set[int]]:
    """From a Snakemake log: the task folder of each train_task job id, and the ids Snakemake reported finished."""
    folders, finished = {}, set()
    for block in re.split(r"\n(?=\[|rule |localrule |Finished )", log):
        if re.match(r"(local)?rule train_task:", block):
            output = re.search(r"output: (\S+)/state\.pt", block)
            jobid = re.search(r"jobid: (\d+)", block)
            if output and jobid:
                folders[int(jobid.group(1))] = output.group(1)
        for match in re.finditer(r"Finished jobid: (\d+) \(Rule: train_task\)", block):
            finished.add(int(match.group(1)))
    return folders, finished


def _planned_train_folders(root: Path, *args) -> set[str]:
    out = snakemake(root, "-n", "--cores", "1", *args)
    return set(re.findall(r"rule train_task:[^\n]*\n(?:[^\n]*\n)*?\s+output: (\S+)/state\.pt", out.stdout + out.stderr, re.S))


def test_killed_snakemake_resumes_without_recomputing_finished_jobs(reference, tmp_path):
    root = _workflow(tmp_path)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    log_path = tmp_path / "first_run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", TARGET, "--configfile", CONFIG],
                                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while len(list(root.glob("results/runs/**/eval.json"))) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the grid finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: snakemake and the jobs it started
        proc.wait()
    folders, finished_ids = _train_jobs(log_path.read_text())
    finished = {folders[i] for i in finished_ids}
    assert len(folders) >= len(finished) > 0 and len(finished) < N_TRAIN_JOBS
    stamps = {f: [(root / f / name).stat().st_mtime_ns for name in ("state.pt", "eval.json")] for f in finished}

    # A SIGKILL can leave Snakemake's lock on the folder: `snakemake --unlock` first, as the README says.
    snakemake(root, "--unlock", TARGET, "--configfile", CONFIG)
    # The rerun's plan is exactly the training jobs that had not finished: nothing finished is recomputed.
    rerun = _planned_train_folders(root, TARGET, "--rerun-incomplete", "--configfile", CONFIG)
    assert not rerun & finished and len(rerun) == N_TRAIN_JOBS - len(finished)
    snakemake(root, "--cores", "2", TARGET, "--rerun-incomplete", "--configfile", CONFIG)
    for folder, before in stamps.items():
        assert [(root / folder / name).stat().st_mtime_ns for name in ("state.pt", "eval.json")] == before
    for name in TABLES:
        assert (root / "results/tables" / name).read_bytes() == (reference / "results/tables" / name).read_bytes()
    ours, theirs = _results(root), _results(reference)
    assert sorted(ours) == sorted(theirs) and [name for name in ours if ours[name] != theirs[name]] == []


def _mount(*args) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mounted(tmp_path):
    """A workflow copy whose results/ is a mount point (root only: skipped elsewhere); unmounted afterwards."""
    (tmp_path / "wf").mkdir()
    root = _workflow(tmp_path / "wf")
    (root / "results").mkdir()
    yield root
    subprocess.run(["umount", "-l", str(root / "results")], capture_output=True)


def _tmp_leftovers(root: Path) -> list[str]:
    return [str(p) for p in (root / "results").rglob("*.tmp")]


def test_full_disk_fails_clearly_leaves_no_partial_file_and_a_rerun_finishes(reference, mounted):
    size = sum(len(b) for b in _results(reference).values()) + (reference / "results/data/digits.npz").stat().st_size
    if not _mount("-t", "tmpfs", "-o", f"size={size // 2}", "tmpfs", str(mounted / "results")):
        pytest.skip("cannot mount a size-limited tmpfs here (needs root)")
    out = snakemake(mounted, "--cores", "2", TARGET, "--configfile", CONFIG, check=False)
    logs = "".join(p.read_text(errors="replace") for p in (mounted / "results").rglob("*.log"))
    assert out.returncode != 0
    # clgrid's own message names the file it could not write, the cause and the fix.
    assert re.search(r"cannot write 'results/\S+': No space left on device; free space on the file system", logs)
    assert _tmp_leftovers(mounted) == []
    # Whatever was written is whole: every checkpoint and JSON that exists loads.
    from clgrid.io import load_torch, read_json

    for path in (mounted / "results").rglob("*"):
        if path.suffix == ".pt":
            load_torch(path)
        elif path.suffix == ".json" and "/data/" not in str(path):
            read_json(path)
    assert _mount("-o", f"remount,size={size * 4}", str(mounted / "results"))
    snakemake(mounted, "--cores", "2", TARGET, "--rerun-incomplete", "--configfile", CONFIG)
    for name in TABLES:
        assert (mounted / "results/tables" / name).read_bytes() == (reference / "results/tables" / name).read_bytes()


def test_read_only_results_folder_fails_clearly_and_writes_nothing(mounted):
    results = str(mounted / "results")
    if not (_mount("--bind", results, results) and _mount("-o", "remount,ro,bind", results)):
        pytest.skip("cannot make a read-only bind mount here (needs root)")
    out = snakemake(mounted, "--cores", "1", TARGET, "--configfile", CONFIG, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "Read-only file system" in text and "results/" in text
    assert list((mounted / "results").iterdir()) == []
