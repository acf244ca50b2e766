"""Per-job start-up cost of the DAG's jobs, against a bare ``import torch`` measured in the same run.

A grid is hundreds of one-task jobs, so what a job pays before and after its
training matters as much as the training. Prints medians and ratios and writes
``benchmarks/results/job_overhead.json``.

    python benchmarks/job_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from clgrid import config as cl
    from clgrid import jobs
    from clgrid.inprocess import validated

    config = validated(REPO / "config/config.yaml", REPO / "workflow/schemas/config.schema.yaml")
    work = Path(tempfile.mkdtemp(prefix="clgrid-bench-"))
    data = work / "digits.npz"
    jobs.prepare_dataset("digits", str(data))
    scenario = work / "split_digits.json"
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), [str(data)], str(scenario))
    init_spec = cl.init_spec(config, "split_digits", "mlp", 0)
    jobs.init_model(init_spec, str(scenario), str(work / "init.pt"))
    jobs.evaluate(init_spec, str(scenario), [str(data)], str(work / "init.pt"), str(work / "init_eval.json"))
    spec = cl.run_spec(config, "split_digits", "mlp", "naive", 0)
    prev, evals = work / "init.pt", []
    for task in range(cl.n_tasks(config, "split_digits")):  # a whole run in-process, for the metrics job
        jobs.train(spec, str(scenario), [str(data)], str(prev), task, str(work / f"s{task}.pt"), str(work / f"e{task}.json"))
        prev = work / f"s{task}.pt"
        evals.append(str(work / f"e{task}.json"))
    clgrid = [sys.executable, "-m", "clgrid.cli"]
    train = clgrid + ["train", "--spec", json.dumps(spec), "--scenario", str(scenario), "--data", str(data),
                      "--prev", str(work / "init.pt"), "--task", "0", "--out-state", str(work / "bench_s.pt"),
                      "--out-eval", str(work / "bench_e.json")]
    metrics = clgrid + ["metrics", "--spec", json.dumps(spec), "--init-eval", str(work / "init_eval.json"),
                        "--evals", *evals, "--out", str(work / "m.json")]
    py = [sys.executable, "-c"]
    torch_optim = ("import torch; m = torch.nn.Linear(4, 4); o = torch.optim.SGD(m.parameters(), lr=0.1); "
                   "m(torch.randn(2, 4)).sum().backward(); o.step()")
    cases = {
        "python_bare": py + ["pass"],
        "import_torch (baseline)": py + ["import torch"],
        "import_torch + torch.optim step": py + [torch_optim],
        "import_torch + use_deterministic_algorithms": py + ["import torch; torch.use_deterministic_algorithms(True)"],
        "clgrid train (split_digits task 0, naive)": train,
        "clgrid metrics (no torch import)": metrics,
    }
    subprocess.run(train, check=True, capture_output=True)  # warm the file cache
    results = {name: wall(cmd, args.repeats) for name, cmd in cases.items()}
    base = results["import_torch (baseline)"]
    print(f"median wall time of {args.repeats} runs; ratio against a bare `import torch` ({base:.2f} s)")
    for name, seconds in results.items():
        print(f"  {name:48s} {seconds:6.2f} s   x{seconds / base:.2f}")
    record = {
        "benchmark": "job_overhead",
        "repeats": args.repeats,
        "seconds": results,
        "ratio_to_import_torch": {k: v / base for k, v in results.items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "torch": __import__("importlib.metadata").metadata.version("torch"),
    }
    out = REPO / "benchmarks" / "results" / "job_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
