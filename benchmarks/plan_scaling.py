"""How ``snakemake -n`` scales with the size of the grid: about 1k, 5k and 10k jobs, timed in one run.

A thesis grid on a cluster is thousands of jobs; planning it must stay fast and grow no worse than linearly.
Each size is the default digits benchmarks with more seeds (every seed adds 5 methods x (5 training jobs +
metrics + analysis) per benchmark), planned in a fresh copy of the workflow with no results, so every job is
planned. Prints seconds, jobs, seconds per 1000 jobs and the ratio of each size's per-job cost to the smallest's
(<= 1 means no worse than linear), and writes ``benchmarks/results/plan_scaling.json``.

    python benchmarks/plan_scaling.py [--sizes 1000 5000 10000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
JOBS_PER_SEED = 2 * 5 * (5 + 2)  # benchmarks x methods x (train tasks + metrics + analysis)


def grid_config(n_jobs: int) -> dict:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["seeds"] = list(range(max(1, round(n_jobs / JOBS_PER_SEED))))
    return config


def plan(root: Path, config_path: Path) -> tuple[float, int]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "rules",
                          "--configfile", str(config_path)], cwd=root, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    total = re.search(r"^total\s+(\d+)$", out.stdout + out.stderr, re.M)
    return elapsed, int(total.group(1)) if total else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("Snakefile", "workflow", "config", "envs", "profiles"):
            src = REPO / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
        for size in args.sizes:
            config_path = root / f"grid_{size}.yaml"
            config_path.write_text(yaml.safe_dump(grid_config(size)))
            times, jobs = [], 0
            for _ in range(args.repeats):
                elapsed, jobs = plan(root, config_path)
                times.append(elapsed)
            seconds = statistics.median(times)
            rows.append({"target_jobs": size, "jobs": jobs, "seconds": round(seconds, 2),
                         "seconds_per_1000_jobs": round(1000 * seconds / jobs, 3)})
            print(f"{jobs:>6} jobs: {seconds:7.1f} s  ({rows[-1]['seconds_per_1000_jobs']:.2f} s per 1000 jobs)",
                  flush=True)
    base = rows[0]["seconds_per_1000_jobs"]
    for row in rows:
        row["per_job_ratio_vs_smallest"] = round(row["seconds_per_1000_jobs"] / base, 2)
    print("per-job planning cost relative to the smallest grid (<= 1: no worse than linear):",
          ", ".join(f"{r['jobs']} jobs x{r['per_job_ratio_vs_smallest']}" for r in rows))
    result = {"benchmark": "snakemake -n on generated grids", "rows": rows,
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count()},
              "snakemake": subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True,
                                          text=True).stdout.strip()}
    out = REPO / "benchmarks/results/plan_scaling.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
