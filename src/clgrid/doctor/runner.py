"""Running the check groups, each in a fresh process by default, and judging method rows against the reference."""

from __future__ import annotations

import logging
import os
import sys

from clgrid.doctor.checks import cache_group, method_group, resume_group, throughput_group
from clgrid.doctor.suite import Options, Row


def child_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    # clgrid's per-epoch lines and open_clip's model-building chatter (on the root logger: "No pretrained weights
    # loaded" for the doctor's random CLIP) only with -v; clgrid's warnings always.
    logging.getLogger().setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("clgrid").setLevel(logging.INFO if verbose else logging.WARNING)


def run_group(group: str, opts: Options, args: tuple) -> list[Row]:
    """Entry point of a group (in this process or a fresh one)."""
    import multiprocessing

    child_logging(opts.verbose)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if opts.start_method and multiprocessing.get_start_method() != opts.start_method:
        # A spawned process defaults to spawning its own children; a train job started by Snakemake forks its
        # DataLoader workers (Linux), and the host-placement rows must time and test that.
        multiprocessing.set_start_method(opts.start_method, force=True)
    functions = {"methods": method_group, "cache": cache_group, "resume": resume_group,
                 "throughput": throughput_group}
    return functions[group](opts, *args)


def in_fresh_process(group: str, opts: Options, args: tuple) -> list[Row]:
    """The group in a new interpreter (spawned: no CUDA state inherited), its rows sent back."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(run_group, group, opts, args).result()
        except BrokenProcessPool as err:
            setting = " · ".join(str(a) for a in args if not isinstance(a, list)) or group
            return [Row(group, setting, key={"died": True}).fail(
                f"the check's process died ({err}); its progress lines above show how far it got; rerun with "
                "--no-isolate -v to see where")]


def run_checks(opts: Options, isolate: bool = True) -> list[Row]:
    """Every requested group, each (by default) in a fresh process; the rows in the order they ran."""
    run = (lambda g, a: in_fresh_process(g, opts, a)) if isolate else (lambda g, a: run_group(g, opts, a))
    rows: list[Row] = []
    if "methods" in opts.checks:
        for precision in opts.precisions:
            for placement in opts.placements:
                todo = list(opts.methods)
                while todo:  # a group stopped by a broken CUDA context goes on in a new process
                    got = run("methods", (precision, placement, todo))
                    rows += got
                    if not got or any(r.key.get("died") for r in got):
                        break  # the process died (no rows for the methods it ran): not retried
                    done = {r.key.get("method") for r in got}
                    todo = [m for m in todo if m not in done]
    if "cache" in opts.checks:
        for precision in opts.precisions:
            rows += run("cache", (precision,))
    if "throughput" in opts.checks:
        rows += run("throughput", ())
    if "resume" in opts.checks:  # last: deterministic kernels are a process-wide setting
        for precision in opts.precisions:
            for placement in opts.placements:
                rows += run("resume", (precision, placement))
    judge_against_reference(rows, opts)
    return rows


def judge_against_reference(rows: list[Row], opts: Options) -> None:
    """Each method row's ACC against its method's fp32 row at the first placement (the reference), and a row at
    another placement against the same precision's row at the first one: FAIL beyond the method's bound, the larger
    of ``opts.tolerance`` and twice what changing the seed alone moved the reference's ACC."""
    if "fp32" not in opts.precisions:
        return
    first = opts.placements[0]
    by_key = {(r.key["method"], r.key["precision"], r.key["placement"]): r for r in rows
              if r.check == "method" and "acc" in r.numbers}
    for row in rows:
        if row.check != "method" or "acc" not in row.numbers:
            continue
        method, precision, placement = row.key["method"], row.key["precision"], row.key["placement"]
        ref = by_key.get((method, "fp32", first))
        bound = opts.tolerance
        if ref is not None and "acc_seed1" in ref.numbers:
            bound = max(bound, 2 * abs(ref.numbers["acc"] - ref.numbers["acc_seed1"]))
        row.numbers["bound"] = bound
        if row is ref:
            row.numbers["vs_reference"] = "reference"
            continue
        if ref is None:
            row.numbers["vs_reference"] = "n/a (the reference failed)"
            continue
        delta = row.numbers["acc"] - ref.numbers["acc"]
        row.numbers["vs_reference"] = delta
        if row.status == "ok" and abs(delta) > bound:
            row.fail(f"ACC {row.numbers['acc']:.1f} is {delta:+.1f} points from fp32/{first}'s "
                     f"{ref.numbers['acc']:.1f} (bound ±{bound:.0f})")
        same = by_key.get((method, precision, first))
        if placement != first and same is not None:
            if same.numbers["acc_matrix"] == row.numbers["acc_matrix"]:
                row.numbers["vs_placement"] = f"= {first}"
            else:
                d = row.numbers["acc"] - same.numbers["acc"]
                row.numbers["vs_placement"] = f"Δ {d:+.1f} vs {first}"
                if row.status == "ok" and abs(d) > bound:
                    row.fail(f"ACC {row.numbers['acc']:.1f} is {d:+.1f} points from the same precision with data "
                             f"on the {first} (bound ±{bound:.0f}); the placement should not change results")
