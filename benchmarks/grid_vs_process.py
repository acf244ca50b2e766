"""Benchmark 1: the default digits grid through Snakemake on 2 cores against one plain PyTorch process on 1 core.

The baseline is benchmarks/plain_grid.py: the same 30 runs (data, model, epochs, batch size, methods) trained one
after another in one process pinned to one core, measured in this run. Against it, Snakemake runs the grid from an
empty results/ on 2 cores, for the code before this change (a git worktree at ``--before-rev``, whose ``clgrid``
jobs import from that worktree) and for this checkout. Each side's jobs run the ``clgrid`` console script its own
pyproject.toml declares (``_common.code_env``): after issue 19 that is the warm worker's client
(``clgrid.worker:main``, docs/speed.md), so "after" pays one torch import per grid instead of one per job. Every
grid starts cold: its own $XDG_RUNTIME_DIR, so no worker of an earlier measurement serves it, and its worker is
stopped when it ends.

- ``to table``: ``snakemake --cores 2 results/tables/summary.csv``: every run trained, evaluated after every task,
  its metrics and the results tables (what the plain script computes, plus checkpoints and provenance);
- ``end to end``: ``snakemake --cores 2``: also the analyses (CKA, RankMe, linear probes), figures and paper files.

Prints the wall times, the ratio of each to the plain process, the number of jobs, and the mean final ACC per
(benchmark, method) of both, then writes benchmarks/results/grid_vs_process.json.

    python benchmarks/grid_vs_process.py                       # about 20 minutes on 2 cores
    python benchmarks/grid_vs_process.py --skip-before         # this checkout only
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, checkout, code_env, copy_workflow, machine, stop_workers  # noqa: E402

BEFORE_REV = "23406c2"  # main before issue 19 (one torch import per job)


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def grid(code: Path, root: Path, target: list[str], config: list[str] = ()) -> dict:
    """Run ``code``'s workflow from an empty results/ in ``root`` on 2 cores; wall time, jobs, mean final ACC."""
    copy_workflow(code, root)
    configs = ["--configfile", *config] if config else []
    runtime = root / "xdg_runtime"  # this grid's own warm worker: none left warm by an earlier measurement
    runtime.mkdir(mode=0o700)
    try:
        seconds, log = timed([sys.executable, "-m", "snakemake", "--cores", "2", *target, *configs], root,
                             {**code_env(code), "XDG_RUNTIME_DIR": str(runtime)})
    finally:
        stop_workers(runtime)
    steps = re.findall(r"(\d+) of (\d+) steps \(100%\) done", log)
    runs = pd.read_csv(root / "results/tables/runs.csv")
    acc = runs.groupby(["benchmark", "method"])["acc"].mean().round(2)
    return {"seconds": round(seconds, 1), "jobs": int(steps[-1][1]) if steps else None,
            "acc": {f"{b}/{m}": v for (b, m), v in acc.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-rev", default=BEFORE_REV)
    parser.add_argument("--skip-before", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/grid_vs_process.json"))
    args = parser.parse_args()
    result: dict = {"benchmark": "default digits grid: Snakemake on 2 cores vs one plain PyTorch process on 1 core",
                    "machine": machine(), "before_rev": args.before_rev}
    with tempfile.TemporaryDirectory(prefix="grid_vs_process.") as tmp:
        tmp = Path(tmp)
        plain_json = tmp / "plain.json"
        seconds, _ = timed(["taskset", "-c", "0", sys.executable, str(REPO / "benchmarks/plain_grid.py"),
                            "--out", str(plain_json), "--threads", "1"], REPO, code_env(REPO))
        plain = json.loads(plain_json.read_text())
        runs = pd.DataFrame(plain["runs"])
        result["plain"] = {"seconds": round(seconds, 1), "acc": {
            f"{b}/{m}": round(v, 2) for (b, m), v in runs.groupby(["benchmark", "method"])["acc"].mean().items()}}
        print(f"plain PyTorch, one process, 1 core: {seconds:.1f} s", flush=True)
        codes = {"after": REPO} if args.skip_before else {"after": REPO,
                                                            "before": checkout(args.before_rev, tmp / "before_code")}
        for label, code in codes.items():
            for scope, target in (("to_table", ["results/tables/summary.csv"]), ("end_to_end", [])):
                row = grid(code, tmp / f"{label}_{scope}", target)
                row["ratio_vs_plain"] = round(row["seconds"] / result["plain"]["seconds"], 2)
                result[f"{label}_{scope}"] = row
                print(f"{label:>6} {scope:>10}: {row['seconds']:7.1f} s, {row['jobs']} jobs, "
                      f"x{row['ratio_vs_plain']} the plain process", flush=True)
        if not args.skip_before:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "before_code")],
                           capture_output=True)
    after = result["after_to_table"]["acc"]
    result["acc_difference_plain_minus_clgrid"] = {k: round(result["plain"]["acc"][k] - v, 2)
                                                   for k, v in after.items()}
    print("mean final ACC over seeds (clgrid | plain | plain - clgrid):")
    for key, value in after.items():
        print(f"  {key:<24} {value:6.1f} | {result['plain']['acc'][key]:6.1f} | "
              f"{result['acc_difference_plain_minus_clgrid'][key]:+5.1f}")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
