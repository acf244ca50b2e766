"""Benchmark 5: the DER Split-MNIST grid (36 runs: 12 methods × 3 seeds, 5 tasks) end to end on 2 cores, before
and after the speed work, in one run.

``snakemake --cores 2 --configfile config/experiments/der_split_mnist.yaml <MNIST from ../shared/data>`` from an
empty results/, first with the code at ``--before-rev`` (a git worktree whose ``clgrid`` the jobs import), then with
this checkout. Prints both wall times, the speed-up, the jobs and the mean class-IL ACC of every method (which must
agree), and writes benchmarks/results/der_grid.json. Needs ../shared/data/mnist.npz.

    python benchmarks/der_grid.py        # about 30 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, checkout, machine  # noqa: E402
from grid_vs_process import BEFORE_REV, grid  # noqa: E402

MNIST = REPO.parent / "shared" / "data" / "mnist.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-rev", default=BEFORE_REV)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/der_grid.json"))
    args = parser.parse_args()
    if not MNIST.exists():
        sys.exit(f"{MNIST} is missing: this benchmark trains on the full MNIST of ../shared/data")
    result: dict = {"benchmark": "DER Split-MNIST grid (config/experiments/der_split_mnist.yaml) end to end, "
                                 "snakemake --cores 2", "machine": machine(), "before_rev": args.before_rev}
    with tempfile.TemporaryDirectory(prefix="der_grid.") as tmp:
        tmp = Path(tmp)
        data = tmp / "mnist.yaml"
        data.write_text(yaml.safe_dump({"datasets": {"mnist": {"npz": str(MNIST)}}}))
        config = ["config/experiments/der_split_mnist.yaml", str(data)]
        for label, code in (("before", checkout(args.before_rev, tmp / "before_code")), ("after", REPO)):
            result[label] = grid(code, tmp / label, [], config)
            print(f"{label:>6}: {result[label]['seconds']:7.1f} s, {result[label]['jobs']} jobs", flush=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "before_code")],
                       capture_output=True)
    result["speedup"] = round(result["before"]["seconds"] / result["after"]["seconds"], 2)
    result["after_over_before"] = round(result["after"]["seconds"] / result["before"]["seconds"], 2)
    print(f"after / before wall time: x{result['after_over_before']} (x{result['speedup']} faster)")
    print("mean class-IL ACC over seeds (before | after):")
    for key, value in result["before"]["acc"].items():
        print(f"  {key:<24} {value:6.2f} | {result['after']['acc'][key]:6.2f}")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
