"""``clgrid doctor`` itself: its options, the no-CUDA line, and the run that checks, prints and writes the table."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from clgrid.doctor.runner import run_checks
from clgrid.doctor.suite import (CACHE_TOLERANCE, THROUGHPUT_CPU, THROUGHPUT_GPU, TOLERANCE, Options, find_schema,
                                  progress)
from clgrid.doctor.table import environment, format_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The verb's options (no torch import: ``clgrid``'s parser is built by every job)."""

    def names(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, auto (a GPU when present) or cpu; "
                                                    "without CUDA, cuda and auto say so and exit 0")
    p.add_argument("--precisions", type=names, default=None, metavar="P,P",
                   help="training precisions to check (fp32, bf16, fp16; default: "
                        "the device's own, bf16 on a recent GPU, and fp32)")
    p.add_argument("--placements", type=names, default=["device", "host"], metavar="P,P",
                   help="data placements: device (inputs in device memory), host (a DataLoader streams them); "
                        "default device,host")
    p.add_argument("--methods", type=names, default=None, metavar="M,M", help="methods (default: every registered)")
    p.add_argument("--checks", type=names, default=["methods", "cache", "resume", "throughput"], metavar="C,C",
                   help="which checks: methods, cache, resume, throughput (default: all)")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file, and the rows (with full "
                                               "tracebacks) as JSON beside it")
    p.add_argument("--workdir", default=None, help="folder for the checks' files (default: a temporary folder, "
                                                   "removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (a --workdir is never removed; "
                                                       "each check starts its subfolder afresh)")
    p.add_argument("--schema", default=None, help="the workflow's config schema (default: found from the checkout)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"points of ACC a run may differ from its method's fp32 reference at least (default "
                        f"{TOLERANCE:g}; twice what the seed alone moves the reference, where that is more)")
    p.add_argument("--throughput-steps", type=int, default=None, help="timed steps per throughput setting "
                   f"(default {THROUGHPUT_GPU['steps']} on a GPU, {THROUGHPUT_CPU['steps']} on the CPU)")
    p.add_argument("--throughput-batch", type=int, default=None, help="throughput batch size (default "
                   f"{THROUGHPUT_GPU['batch']} on a GPU, {THROUGHPUT_CPU['batch']} on the CPU)")
    p.add_argument("--throughput-warmup", type=int, default=None, help="untimed warm-up steps (default "
                   f"{THROUGHPUT_GPU['warmup']} on a GPU, {THROUGHPUT_CPU['warmup']} on the CPU)")
    p.add_argument("--cpu-compile", action="store_true", help="time torch.compile on the CPU too (slow)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of host-placed runs (default 2)")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="run every check in this process (faster; a poisoned CUDA context then fails the rest)")


def no_cuda_line(device: str) -> str | None:
    """The one line said when the device asked for is CUDA and torch sees none; None when CUDA is there."""
    if device == "cpu":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return (f"clgrid doctor: no CUDA GPU visible to torch {torch.__version__} ({build}) on this machine, so nothing "
            "was checked; run it on a GPU node, or with --device cpu to check the CPU path")


def run(args: argparse.Namespace) -> int:
    """``clgrid doctor``: returns the exit code (0 all ok or no CUDA to check, 1 a check failed, 2 bad usage)."""
    import multiprocessing

    from clgrid.methods import METHODS
    from clgrid.device import PRECISIONS, resolve_device, resolve_precision

    line = no_cuda_line(args.device)
    if line:
        print(line)
        return 0
    device = str(resolve_device(args.device))
    precisions = args.precisions or list(dict.fromkeys([resolve_precision("auto", resolve_device(device)), "fp32"]))
    methods = args.methods or sorted(METHODS)
    problems = [f"unknown precision '{p}'" for p in precisions if p not in PRECISIONS or p == "auto"]
    problems += [f"unknown placement '{p}'" for p in args.placements if p not in ("device", "host")]
    problems += [f"unknown method '{m}'" for m in methods if m not in METHODS]
    problems += [f"unknown check '{c}'" for c in args.checks if c not in ("methods", "cache", "resume", "throughput")]
    if problems:
        print(f"clgrid doctor: {'; '.join(problems)}", file=sys.stderr)
        return 2
    try:
        schema = find_schema(args.schema)
    except FileNotFoundError as err:
        print(f"clgrid doctor: {err}", file=sys.stderr)
        return 2
    throughput = {k: v for k, v in (("steps", args.throughput_steps), ("batch", args.throughput_batch),
                                    ("warmup", args.throughput_warmup)) if v is not None}
    temporary = args.workdir is None
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="clgrid-doctor-"))
    workdir.mkdir(parents=True, exist_ok=True)
    opts = Options(device=device, precisions=list(dict.fromkeys(precisions)), placements=list(args.placements),
                   methods=methods, checks=list(args.checks), workdir=str(workdir), schema=str(schema),
                   tolerance=args.tolerance, throughput=throughput,
                   cpu_compile=args.cpu_compile, workers=args.workers, verbose=getattr(args, "verbose", False),
                   start_method=multiprocessing.get_start_method())
    env = environment(device)
    progress(f"checking {env.get('gpu') or 'the CPU'} with torch {env['torch']}: precisions {opts.precisions}, "
              f"placements {opts.placements}, {len(methods)} methods, checks {opts.checks}; files in {workdir}")
    start = time.perf_counter()
    try:
        rows = run_checks(opts, isolate=args.isolate)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - start
    table = format_table(rows, opts, env, wall)
    print(table, end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        record = {"environment": env, "options": {k: v for k, v in asdict(opts).items() if k != "workdir"},
                  "tolerance": opts.tolerance, "cache_tolerance": CACHE_TOLERANCE, "wall_s": round(wall, 1),
                  "failed": sum(r.status == "FAIL" for r in rows), "rows": [asdict(r) for r in rows]}
        out.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
        progress(f"wrote {out} and {out.with_suffix('.json')}")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


def _package_summary() -> str:
    import clgrid.doctor  # the package's docstring opens with the command's one-line summary

    return clgrid.doctor.__doc__.splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clgrid doctor", description=_package_summary())
    parser.add_argument("-v", "--verbose", action="store_true")
    add_arguments(parser)
    return run(parser.parse_args(argv))
