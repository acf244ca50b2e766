"""Write the speed tables of the user guide's Speed page (docs/speed.md) from benchmarks/results/*.json.

    python benchmarks/summarize.py    # rewrites docs/speed.md's speed:begin / speed:end block; --print shows it
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SPEED_PAGE = REPO / "docs" / "speed.md"
BEGIN, END = "<!-- speed:begin (benchmarks/summarize.py writes this block) -->", "<!-- speed:end -->"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def grid_table(r: dict) -> list[str]:
    plain = r["plain"]["seconds"]
    rows = [f"Before: commit {r['before_rev']} (the warm worker came after it); after: this checkout. Goals: to the "
            "table ≤ 0.8, end to end ≤ 1.5.", "",
            "| default digits grid (30 runs) | wall time | jobs | × the plain process |",
            "|---|---|---|---|",
            f"| plain PyTorch, one process, 1 core (`benchmarks/plain_grid.py`) | {plain:.0f} s | 1 | 1.00 |"]
    for label in ("before", "after"):
        for scope, what in (("to_table", "to the results table"), ("end_to_end", "end to end (analyses, figures)")):
            row = r[f"{label}_{scope}"]
            rows.append(f"| Snakemake, 2 cores, {label}, {what} | {row['seconds']:.0f} s | {row['jobs']} | "
                        f"{row['ratio_vs_plain']:.2f} |")
    diffs = r["acc_difference_plain_minus_clgrid"]
    worst = max(diffs, key=lambda k: abs(diffs[k]))
    same = r["before_to_table"]["acc"] == r["after_to_table"]["acc"]
    rows += ["", f"Mean final ACC per (benchmark, method): before and after {'identical' if same else 'DIFFERENT'}; "
                 f"plain − clgrid within ±1 point for {sum(abs(v) <= 1.0 for v in diffs.values())} of "
                 f"{len(diffs)} cells, largest {worst} {diffs[worst]:+.1f}."]
    repeat = load("grid_vs_process_repeat")
    if repeat:
        rows += ["", f"A repeat of the after side alone (`--skip-before`): plain {repeat['plain']['seconds']:.0f} s, "
                     f"to the table ×{repeat['after_to_table']['ratio_vs_plain']:.2f}, end to end "
                     f"×{repeat['after_end_to_end']['ratio_vs_plain']:.2f}."]
    return rows


def loop_table(r: dict) -> list[str]:
    rows = ["| one task's training, 1 thread | batch | plain samples/s | clgrid before | clgrid after | "
            "before / plain | after / plain |", "|---|---|---|---|---|---|---|"]
    for name, case in r["cases"].items():
        sps, ratio = case["samples_per_s"], case["ratio_to_plain"]
        rows.append(f"| {name} | {case['batch_size']} | {sps['plain']:,.0f} | {sps['clgrid_before']:,.0f} | "
                    f"{sps['clgrid_after']:,.0f} | {ratio['clgrid_before']:.2f} | {ratio['clgrid_after']:.2f} |")
    return rows


def method_table(r: dict) -> list[str]:
    rows = ["| method | MLP × naive before | after | CNN × naive before | after | why above 3× |",
            "|---|---|---|---|---|---|"]
    mlp, cnn = r["results"].get("mlp", {}), r["results"].get("cnn", {})
    for method in sorted(mlp):
        m, c = mlp[method], cnn.get(method)
        why = m.get("why") or (c or {}).get("why") or ""
        cnn_cells = f"{c['ratio_vs_naive']['before']:.2f} | {c['ratio_vs_naive']['after']:.2f}" if c else "– | –"
        rows.append(f"| {method} | {m['ratio_vs_naive']['before']:.2f} | {m['ratio_vs_naive']['after']:.2f} | "
                    f"{cnn_cells} | {why} |")
    return rows


def der_line(r: dict) -> list[str]:
    same = all(abs(r["before"]["acc"][k] - r["after"]["acc"][k]) < 1e-9 for k in r["before"]["acc"])
    return [f"| DER Split-MNIST grid, 36 runs, end to end, 2 cores | before {r['before']['seconds']:.0f} s "
            f"({r['before']['jobs']} jobs) | after {r['after']['seconds']:.0f} s ({r['after']['jobs']} jobs) | "
            f"× {r['after_over_before']:.2f} (×{r['speedup']:.2f} faster); mean ACC per method "
            f"{'identical' if same else 'DIFFERENT'} |", ]


def overhead_lines(r: dict) -> list[str]:
    s = r["seconds"]
    heavy = r["heavy_modules_imported"]
    return [f"| `import torch` | {s['import_torch (baseline)']:.2f} s |",
            f"| `clgrid train`, one task, before / after | {s['clgrid train, 1 task, before']:.2f} s / "
            f"{s['clgrid train, 1 task']:.2f} s |",
            f"| a 5-task digits run: 5 one-task jobs before / one 5-task job after | "
            f"{s['clgrid train, 5 one-task jobs, before']:.2f} s / {s['clgrid train, 5 tasks in one job']:.2f} s "
            f"(× {r['run_of_5_tasks_one_job_over_five_jobs_before']:.2f}) |",
            f"| `clgrid metrics` (no torch) | {s['clgrid metrics (no torch import)']:.2f} s |",
            "| optional libraries imported by a digits `train` / `metrics` / `analyze` job | "
            + " / ".join(", ".join(v) or "none" for v in heavy.values()) + " |"]


def block() -> str:
    out = [BEGIN, ""]
    grid, loop, method, der, overhead = (load(n) for n in ("grid_vs_process", "loop_vs_plain", "method_cost",
                                                         "der_grid", "job_overhead"))
    if grid:
        out += ["**1. Grid vs one process** (`benchmarks/grid_vs_process.py`):", ""] + grid_table(grid) + [""]
    if loop:
        out += ["**2. Loop vs plain PyTorch** (`benchmarks/loop_vs_plain.py`; goal ≥ 0.95):", ""] + loop_table(loop) + [""]
    if method:
        out += ["**3. Per-method step cost relative to naive** (`benchmarks/method_cost.py`, batch 32, 1 thread):", ""]
        out += method_table(method) + [""]
    out += ["**4. GPU**: no GPU machine was lent to this work; `benchmarks/gpu_throughput.py` (ResNet-18 32 px and "
            "ViT-B/16 224 px, fp32 vs bf16, TFLOP/s against the bf16 peak) is ready for one and exits with a "
            "message without CUDA. The GPU path's logic is covered by CPU-run tests (`tests/test_train.py`).", ""]
    if der:
        out += ["**5.** (`benchmarks/der_grid.py`)", "", "| grid | before | after | ratio |", "|---|---|---|---|"]
        out += der_line(der) + [""]
    if overhead and "heavy_modules_imported" in overhead:
        out += ["**Start-up** (`benchmarks/job_overhead.py`, medians):", "", "| what | wall time |", "|---|---|"]
        out += overhead_lines(overhead) + [""]
    machine = (grid or loop or {}).get("machine", {})
    out += [f"Machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs, torch {machine.get('torch', '?')}.",
            "", END]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the block instead of writing docs/speed.md")
    args = parser.parse_args()
    text = block()
    if args.print:
        print(text)
        return
    content = SPEED_PAGE.read_text()
    if BEGIN not in content or END not in content:
        sys.exit(f"{SPEED_PAGE.relative_to(REPO)} has no {BEGIN} ... {END} block")
    SPEED_PAGE.write_text(re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: text, content, flags=re.S))
    print(f"rewrote the speed block of {SPEED_PAGE}")


if __name__ == "__main__":
    main()
