"""The whole default DAG, run for real by Snakemake in a temporary copy of the workflow.

Checks every expected output, the tables, the method orderings the literature
predicts on the same seeds, that one run's target plans only that run's jobs,
that deleting one task's state rebuilds only what depends on it, and that the
rebuilt numbers are byte-identical (CPU determinism).
"""

import json
import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import REPO, copy_workflow

pytestmark = pytest.mark.e2e

ONE_RUN = "results/runs/split_digits/mlp/ewc/s1/metrics.json"
PROVENANCE_KEYS = {"config_hash", "clgrid", "git_commit", "torch", "numpy", "seed", "device", "python"}


def snakemake(root, *args, check=True):
    # The rules call `clgrid`, installed beside this interpreter: put it on PATH even without an activated venv.
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=root, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(root, *targets):
    out = snakemake(root, "-n", "--cores", "1", *targets)
    text = out.stdout + out.stderr
    stats = text.split("Job stats:")[-1] if "Job stats:" in text else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def tasks_trained(planned):
    """Training tasks in a plan's job stats: a train_task job trains one, a train_<benchmark>_tasks<a>to<b> job
    b - a + 1 (the benchmark's tasks_per_job)."""
    total = 0
    for rule, n in planned.items():
        chunk = re.fullmatch(r"train_\w+_tasks(\d+)to(\d+)", rule)
        total += n * (int(chunk[2]) - int(chunk[1]) + 1) if chunk else n if rule == "train_task" else 0
    return total


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = copy_workflow(tmp_path_factory.mktemp("grid"))
    planned_one = planned_jobs(root, ONE_RUN)
    start = time.perf_counter()
    snakemake(root, "--cores", "2")
    wall = time.perf_counter() - start
    print(f"\ndefault grid: {wall:.0f} s wall on 2 cores")
    return {"root": root, "planned_one": planned_one, "wall": wall}


def test_one_target_plans_only_its_run(grid):
    assert grid["planned_one"] == {
        "prepare_dataset": 1, "prepare_scenario": 1, "init_model": 1, "evaluate_init": 1,
        "train_split_digits_tasks0to4": 1, "run_metrics": 1,  # tasks_per_job auto: a digits run is one job
    }


def test_every_output_exists(grid):
    root = grid["root"]
    for table in ("runs.csv", "acc_matrix.csv", "summary.csv", "summary.md", "summary.tex", "per_seed.csv",
                  "per_seed.md", "comparisons.csv", "comparisons.md"):
        assert (root / "results/tables" / table).stat().st_size > 0
    for bench in ("split_digits", "permuted_digits"):
        for fig in ("acc_matrix", "acc_curve", "forgetting", "summary", "cka_curves", "cka_layers", "rankme",
                    "probe_vs_head"):
            for ext in ("png", "pdf"):
                assert (root / f"results/figures/{bench}/mlp/{fig}.{ext}").stat().st_size > 1000
    for t in range(5):
        assert (root / f"results/runs/permuted_digits/mlp/replay/s2/task{t}/state.pt").exists()
        assert (root / f"results/runs/permuted_digits/mlp/replay/s2/task{t}/train.log").exists()
    assert (root / "results/runs/permuted_digits/mlp/replay/s2/train_tasks0to4.bench.tsv").exists()
    cost = pd.read_csv(root / "results/tables/cost.csv")
    assert len(cost) == 2 * 5 * 3 * (5 + 2)  # every run: 5 tasks, its initial model and its metrics job
    for bench in ("split_digits", "permuted_digits"):
        assert (root / f"results/figures/{bench}/mlp/acc_vs_compute.png").stat().st_size > 1000


def test_tables_have_one_row_per_cell(grid):
    root = grid["root"]
    runs = pd.read_csv(root / "results/tables/runs.csv")
    assert len(runs) == 2 * 5 * 3
    summary = pd.read_csv(root / "results/tables/summary.csv")
    assert len(summary) == 2 * 5
    assert set(zip(summary.benchmark, summary.method)) == {
        (b, m) for b in ("split_digits", "permuted_digits") for m in ("naive", "joint", "ewc", "lwf", "replay")}
    assert (summary["seeds_n"] == 3).all()
    md = (root / "results/tables/summary.md").read_text()
    assert md.count("| replay") == 2 and "±" in md
    # the default tables: block: 95% intervals, joint the best ACC (bold) on both benchmarks, every test listed
    assert "95% confidence interval" in md and md.count("| joint    | **") == 2
    # per seed: ACC and forgetting, class-IL and task-IL on split_digits (4), class-IL only on permuted_digits (2)
    assert "acc_ci95" in summary.columns and len(pd.read_csv(root / "results/tables/per_seed.csv")) == (4 + 2) * 5
    comparisons = pd.read_csv(root / "results/tables/comparisons.csv")
    assert set(comparisons[comparisons["metric"] == "acc"]["best_method"]) == {"joint"}
    tex = (root / "results/tables/summary.tex").read_text()
    assert r"\toprule" in tex and r"$\pm$" in tex


def test_metrics_files_carry_matrix_and_provenance(grid):
    m = json.loads((grid["root"] / ONE_RUN).read_text())
    assert len(m["acc_matrix"]) == 5 and all(len(row) == 5 for row in m["acc_matrix"])
    assert PROVENANCE_KEYS <= set(m["provenance"]) and m["provenance"]["seed"] == 1
    assert m["provenance"]["device"] == "cpu"
    assert len(m["checkpoint_sha256"]) == 5 and len(set(m["checkpoint_sha256"])) == 5


def test_analysis_files_are_consistent(grid):
    a = json.loads((grid["root"] / "results/runs/split_digits/mlp/naive/s0/analysis.json").read_text())
    assert a["layers"] == ["backbone.block1", "backbone.block2", "head"]
    for values in a["cka_to_first"].values():
        assert values[0] == pytest.approx(1.0) and all(0.0 <= v <= 1.0 + 1e-9 for v in values)
    assert all(1.0 <= r <= 256 for r in a["rankme"]) and all(0 <= p <= 100 for p in a["probe_acc"])
    m = json.loads((grid["root"] / "results/runs/split_digits/mlp/naive/s0/metrics.json").read_text())
    assert a["head_acc"] == pytest.approx(m["acc_seen"])


def test_paper_and_report(grid):
    root = grid["root"]
    tex = (root / "results/paper/tables.tex").read_text()
    assert r"\textbf{" in tex and r"\toprule" in tex
    assert "**" in (root / "results/paper/tables.md").read_text()
    pdfs = sorted(p.name for p in (root / "results/paper").glob("*.pdf"))
    assert len(pdfs) == 2 * 8 and "split_digits_mlp_cka_curves.pdf" in pdfs
    assert b"FontFile2" in (root / "results/paper/split_digits_mlp_summary.pdf").read_bytes()  # TrueType embedded
    snakemake(root, "--report", "report.html")
    html = (root / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "cka_curves.png" in html and "summary.md" in html


def test_orderings_from_the_literature(grid):
    runs = pd.read_csv(grid["root"] / "results/tables/runs.csv")
    mean = runs.groupby(["benchmark", "method"])[["acc", "forgetting"]].mean()
    split, perm = mean.loc["split_digits"], mean.loc["permuted_digits"]
    assert split.loc["joint", "acc"] > split.loc["naive", "acc"]
    assert split.loc["replay", "forgetting"] < split.loc["naive", "forgetting"]
    for method in ("ewc", "lwf", "replay"):
        assert perm.loc[method, "forgetting"] < perm.loc["naive", "forgetting"], method


def test_forcing_one_task_rebuilds_only_dependents_identically(grid):
    root = grid["root"]
    run = root / "results/runs/permuted_digits/mlp/ewc/s1"
    before = {name: (run / name).read_bytes() for name in ("metrics.json", "analysis.json")}
    untouched = (root / "results/runs/permuted_digits/mlp/ewc/s0/metrics.json").stat().st_mtime_ns
    task2 = "results/runs/permuted_digits/mlp/ewc/s1/task2/state.pt"
    assert planned_jobs(root, "--forcerun", task2) == {
        # The run's one training job (tasks_per_job auto: all five tasks), then what depends on the run;
        # only permuted_digits' analysis figures depend on it.
        "train_permuted_digits_tasks0to4": 1, "run_metrics": 1, "analyze_run": 1, "tables": 1, "figures": 2,
        "analysis_figures": 1, "paper": 1, "cost_tables": 1, "cost_figure": 2, "all": 1,
    }
    snakemake(root, "--cores", "2", "--forcerun", task2)
    for name, content in before.items():
        assert (run / name).read_bytes() == content, f"{name} changed on rebuild"
    assert (root / "results/runs/permuted_digits/mlp/ewc/s0/metrics.json").stat().st_mtime_ns == untouched


def test_lint_is_clean():
    out = snakemake(REPO, "--lint", check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
