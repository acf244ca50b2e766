"""Per-job start-up cost of the DAG's jobs, against a bare ``import torch`` measured in the same run.

A grid is hundreds of small jobs, so what a job pays before and after its training matters as much as the
training. Measures: a one-task ``clgrid train`` job with the code before issue 19 (``--before-rev``, a git
worktree) and now, run directly (as ``CLGRID_WORKER=0`` or under SLURM) and through a warm worker (the console
script's default since issue 19: the job is forked from a process that imported torch once, docs/speed.md); five
one-task jobs against one job training the run's five tasks (``tasks_per_job``); the metrics job; the client's own
start-up; and which heavy optional libraries (open_clip, transformers, peft, faiss, seaborn, ...) each kind of
job imports (a digits job must import none it does not use). Prints medians and ratios and writes
``benchmarks/results/job_overhead.json``.

    python benchmarks/job_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import checkout, code_env, console_script, machine, stop_workers  # noqa: E402

BEFORE_REV = "23406c2"  # main before issue 19 (one torch import per job)
HEAVY = ("open_clip", "transformers", "peft", "faiss", "pytorch_metric_learning", "seaborn", "matplotlib",
         "sklearn", "scipy", "pandas", "torchvision", "torch._dynamo", "torch._inductor")
# Runs a clgrid verb in this interpreter, then prints which of HEAVY it imported.
PROBE = ("import json, runpy, sys\nheavy = json.loads(sys.argv[2])\nsys.argv = ['clgrid'] + json.loads(sys.argv[1])\n"
         "try:\n    runpy.run_module('clgrid.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('IMPORTED ' + json.dumps([m for m in heavy if m in sys.modules]))")


def wall(cmd: list[str], repeats: int, env: dict | None = None) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def wait_until_listening(runtime: Path, timeout: float = 300) -> None:
    """Until the warm worker the first client started has imported torch and listens."""
    deadline = time.monotonic() + timeout
    while not list(runtime.glob("clgrid-*.sock")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no warm worker listening in {runtime} after {timeout} s")
        time.sleep(0.1)


def imported(verb_args: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(verb_args), json.dumps(HEAVY)], check=True,
                         capture_output=True, text=True, env=code_env(REPO)).stdout
    return json.loads(out.rsplit("IMPORTED ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before-rev", default=BEFORE_REV)
    args = parser.parse_args()

    from clgrid import config as cl
    from clgrid import jobs
    from clgrid.inprocess import validated

    config = validated(REPO / "config/config.yaml", REPO / "workflow/schemas/config.schema.yaml")
    work = Path(tempfile.mkdtemp(prefix="clgrid-bench-"))
    data = work / "digits.npz"
    jobs.prepare_dataset(cl.dataset_spec(config, "digits"), str(data))
    scenario = work / "split_digits.json"
    jobs.prepare_scenario(cl.scenario_spec(config, "split_digits"), [str(data)], str(scenario))
    init_spec = cl.init_spec(config, "split_digits", "mlp", 0)
    jobs.init_model(init_spec, str(scenario), str(work / "init.pt"))
    jobs.evaluate(init_spec, str(scenario), [str(data)], str(work / "init.pt"), str(work / "init_eval.json"))
    spec = cl.run_spec(config, "split_digits", "mlp", "naive", 0)
    n = cl.n_tasks(config, "split_digits")
    states, evals = [str(work / f"s{t}.pt") for t in range(n)], [str(work / f"e{t}.json") for t in range(n)]
    jobs.train_tasks(spec, str(scenario), [str(data)], str(work / "init.pt"), list(range(n)), states, evals)
    clgrid = [sys.executable, "-m", "clgrid.cli"]
    common = ["--spec", json.dumps(spec), "--scenario", str(scenario), "--data", str(data)]
    one_task = ["train", *common, "--prev", str(work / "init.pt"), "--task", "0", "--out-state",
                str(work / "bench_s.pt"), "--out-eval", str(work / "bench_e.json")]
    whole_run = ["train", *common, "--prev", str(work / "init.pt"), "--task", *map(str, range(n)), "--out-state",
                 *[str(work / f"b{t}.pt") for t in range(n)], "--out-eval", *[str(work / f"b{t}.json") for t in range(n)]]
    metrics = ["metrics", "--spec", json.dumps(spec), "--init-eval", str(work / "init_eval.json"), "--evals", *evals,
               "--out", str(work / "m.json")]
    analyze = ["analyze", "--spec", json.dumps(cl.analysis_spec(config, "split_digits", "mlp", "naive", 0)), "--scenario",
               str(scenario), "--data", str(data), "--states", *states, "--evals", *evals, "--out", str(work / "a.json")]
    py = [sys.executable, "-c"]
    before = checkout(args.before_rev, work / "before_code")
    runtime = work / "xdg"  # the warm worker of this benchmark alone, kept warm through every measurement
    runtime.mkdir(mode=0o700)
    warm_env = {**code_env(REPO), "XDG_RUNTIME_DIR": str(runtime), "CLGRID_WORKER_IDLE": "900"}
    client = [str(console_script(REPO) / "clgrid")]
    cases = {
        "python_bare": (py + ["pass"], None),
        "import_torch (baseline)": (py + ["import torch"], None),
        "clgrid train, 1 task, before": (clgrid + one_task, code_env(before)),
        "clgrid train, 1 task": (clgrid + one_task, code_env(REPO)),
        "clgrid train, 5 tasks in one job": (clgrid + whole_run, code_env(REPO)),
        "clgrid metrics (no torch import)": (clgrid + metrics, code_env(REPO)),
        "clgrid train, 1 task, warm worker": (client + one_task, warm_env),
        "clgrid train, 5 tasks in one job, warm worker": (client + whole_run, warm_env),
        "clgrid metrics, warm worker": (client + metrics, warm_env),
        "clgrid client alone (import clgrid.worker)": (py + ["import clgrid.worker"], code_env(REPO)),
    }
    for cmd, env in cases.values():  # warm the file cache; the first client starts the worker
        subprocess.run(cmd, check=True, capture_output=True, env=env)
    wait_until_listening(runtime)
    results = {name: wall(cmd, args.repeats, env) for name, (cmd, env) in cases.items()}
    results["clgrid train, 5 one-task jobs (5 x 1 task)"] = 5 * results["clgrid train, 1 task"]
    results["clgrid train, 5 one-task jobs, before"] = 5 * results["clgrid train, 1 task, before"]
    results["clgrid train, 5 one-task jobs, warm worker"] = 5 * results["clgrid train, 1 task, warm worker"]
    base = results["import_torch (baseline)"]
    print(f"median wall time of {args.repeats} runs; ratio against a bare `import torch` ({base:.2f} s)")
    for name, seconds in results.items():
        print(f"  {name:48s} {seconds:6.2f} s   x{seconds / base:.2f}")
    run_ratio = results["clgrid train, 5 tasks in one job"] / results["clgrid train, 5 one-task jobs, before"]
    print(f"a 5-task run's training: one job / five jobs before = x{run_ratio:.2f}")
    heavy = {"train (digits, MLP)": imported(one_task), "metrics": imported(metrics), "analyze": imported(analyze)}
    for verb, modules in heavy.items():
        print(f"  {verb:24s} imports {', '.join(modules) or 'none'} of {', '.join(HEAVY)}")
    stop_workers(runtime)
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    record = {
        "benchmark": "job_overhead",
        "repeats": args.repeats,
        "before_rev": args.before_rev,
        "seconds": results,
        "ratio_to_import_torch": {k: v / base for k, v in results.items()},
        "run_of_5_tasks_one_job_over_five_jobs_before": run_ratio,
        "heavy_modules_imported": heavy,
        "machine": machine(),
    }
    out = REPO / "benchmarks" / "results" / "job_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
