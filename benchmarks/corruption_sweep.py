"""Damaged result files against clgrid's readers, with the plain loaders as the baseline, in one run.

Files, each written by clgrid's own writer into a scratch ``results/`` tree (so messages name the rule):

* checkpoint: ``save_torch`` of a small state (a 32×16 and a 16 float tensor, a 10 int tensor, ints, a list), read
  by ``load_torch``; once with its ``.sha256`` file and once without (results written before checksums: the zip
  CRC-32 check is all there is); baseline ``torch.load(weights_only=True)``.
* scenario JSON: ``write_json`` of a 3-task scenario, read by ``read_json``; with and without its ``.sha256``;
  baseline ``json.loads``.
* dataset: ``prepare_dataset('digits')`` (the .npz and its sidecar JSON holding the sha256), read as jobs read it
  (``clgrid.context.load_datasets``: ``load_npz(verify=True)``) and without the sidecar (``load_npz`` with the required
  arrays); baseline ``np.load``.

Damage: every single-bit flip at every ``--stride``-th byte (the bit cycles with the offset; with ``--all-bits``
all eight), and truncation to ~200 lengths from 0 to the full size. Each damaged file is read: ``caught`` (a
``CorruptFileError``), ``harmless`` (read, content equal to the original) or ``WRONG`` (read, content differs: the
silent failure). Also times ``save_torch``/``load_torch`` against ``torch.save``/``torch.load`` on a
``--size-mb`` checkpoint (median of 3): the cost of the sha256.

Prints a table and writes ``benchmarks/results/corruption_sweep.json``.

    python benchmarks/corruption_sweep.py [--stride 1] [--all-bits] [--size-mb 256] [--scratch /dev/shm]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from clgrid.io import CorruptFileError, checksum_path, load_npz, load_torch, read_json, save_torch, write_json


def sweep(path: Path, read, equal, stride: int, all_bits: bool) -> dict:
    original = path.read_bytes()
    counts = {"caught": 0, "harmless": 0, "WRONG": 0}
    flips = [(o, b) for o in range(0, len(original), stride) for b in (range(8) if all_bits else [o % 8])]
    for offset, bit in flips:
        damaged = bytearray(original)
        damaged[offset] ^= 1 << bit
        path.write_bytes(bytes(damaged))
        try:
            value = read(path)
        except CorruptFileError:
            counts["caught"] += 1
            continue
        except Exception:  # noqa: BLE001 - the baseline loaders raise all sorts; a raise is a detection
            counts["caught"] += 1
            continue
        try:
            same = bool(equal(value))
        except Exception:  # noqa: BLE001 - a damaged key or type: read, but not the content written
            same = False
        counts["harmless" if same else "WRONG"] += 1
    truncated = {"caught": 0, "read": 0}
    for n in range(0, len(original), max(1, len(original) // 200)):
        path.write_bytes(original[:n])
        try:
            read(path)
            truncated["read"] += 1
        except Exception:  # noqa: BLE001
            truncated["caught"] += 1
    path.write_bytes(original)
    return {"bytes": len(original), "flips": counts, "truncations": truncated}


def timing(root: Path, size_mb: int) -> dict:
    state = {"clgrid": {}, "task": 0, "model": {"w": torch.randn(size_mb * 2**18)}}
    plain, ours = root / "plain.pt", root / "ours.pt"

    def median(fn):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def torch_save():
        with open(plain, "wb") as handle:
            torch.save(state, handle)

    result = {"size_mb": size_mb,
              "torch.save": median(torch_save), "save_torch": median(lambda: save_torch(ours, state)),
              "torch.load": median(lambda: torch.load(plain, map_location="cpu", weights_only=True)),
              "load_torch": median(lambda: load_torch(ours))}
    result["save_ratio"] = result["save_torch"] / result["torch.save"]
    result["load_ratio"] = result["load_torch"] / result["torch.load"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--all-bits", action="store_true")
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--scratch", default=None, help="folder for the damaged files (a tmpfs is faster)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the no-checksum warnings, once per damaged file
    warnings.filterwarnings("ignore", message="Detected pickle protocol")  # damaged pickles, baseline arm
    root = Path(tempfile.mkdtemp(dir=args.scratch)) / "results"
    rows = {}

    state = {"clgrid": {"seed": 0}, "task": 1, "model": {"w": torch.randn(32, 16, generator=torch.Generator().manual_seed(0)),
             "b": torch.zeros(16)}, "method": {"seen_classes": [0, 1], "buf": torch.arange(10)}}

    def same_state(v):
        return (v["task"] == 1 and v["clgrid"] == state["clgrid"] and v["method"]["seen_classes"] == [0, 1]
                and all(torch.equal(v["model"][k], state["model"][k]) for k in ("w", "b"))
                and torch.equal(v["method"]["buf"], state["method"]["buf"]))

    ckpt = root / "runs/b/mlp/naive/s0/task1/state.pt"
    save_torch(ckpt, state)
    rows["checkpoint, load_torch"] = sweep(ckpt, load_torch, same_state, args.stride, args.all_bits)
    checksum_path(ckpt).unlink()
    rows["checkpoint without .sha256, load_torch"] = sweep(ckpt, load_torch, same_state, args.stride, args.all_bits)
    rows["checkpoint, torch.load (baseline)"] = sweep(
        ckpt, lambda p: torch.load(io.BytesIO(p.read_bytes()), weights_only=True), same_state, args.stride,
        args.all_bits)

    scenario = {"n_classes": 6, "input_norm": {"mean": [0.5], "std": [0.25]},
                "tasks": [{"id": i, "classes": [2 * i, 2 * i + 1], "train_idx": list(range(7 * i, 7 * i + 7)),
                           "transform": None} for i in range(3)]}
    scen = root / "scenarios/b.json"
    write_json(scen, scenario)
    rows["scenario JSON, read_json"] = sweep(scen, read_json, lambda v: v == scenario, args.stride, args.all_bits)
    checksum_path(scen).unlink()
    rows["scenario JSON without .sha256, read_json"] = sweep(scen, read_json, lambda v: v == scenario, args.stride,
                                                             args.all_bits)
    rows["scenario JSON, json.loads (baseline)"] = sweep(scen, lambda p: json.loads(p.read_text()),
                                                         lambda v: v == scenario, args.stride, args.all_bits)

    from clgrid.data.datasets import ARRAYS, prepare_dataset
    from clgrid.context import load_datasets

    data = root / "data/digits.npz"
    prepare_dataset("digits", str(data))
    reference = load_npz(data)

    def same_arrays(v):
        return set(v) == set(reference) and all(np.array_equal(v[k], reference[k]) for k in reference)

    stride = max(args.stride, 7)  # 70 kB: every 7th byte is plenty
    rows["dataset, context.load_datasets"] = sweep(data, lambda p: load_datasets([str(p)], ["digits"])["digits"],
                                                same_arrays, stride, args.all_bits)
    rows["dataset without sidecar sha256, load_npz"] = sweep(data, lambda p: load_npz(p, ARRAYS), same_arrays, stride,
                                                             args.all_bits)
    rows["dataset, np.load (baseline)"] = sweep(
        data, lambda p: dict(np.load(io.BytesIO(p.read_bytes()), allow_pickle=False)), same_arrays, stride,
        args.all_bits)

    print("| file, reader | bytes | flips caught | harmless | WRONG (silent) | truncations caught |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        f, t = r["flips"], r["truncations"]
        print(f"| {name} | {r['bytes']:,} | {f['caught']:,} | {f['harmless']:,} | {f['WRONG']:,} | "
              f"{t['caught']}/{t['caught'] + t['read']} |")
    cost = timing(root.parent, args.size_mb)
    print(f"\n{args.size_mb} MB checkpoint: save_torch {cost['save_torch']:.2f} s vs torch.save {cost['torch.save']:.2f} s "
          f"(x{cost['save_ratio']:.2f}); load_torch {cost['load_torch']:.2f} s vs torch.load {cost['torch.load']:.2f} s "
          f"(x{cost['load_ratio']:.2f})")
    out = Path(__file__).parent / "results" / "corruption_sweep.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "timing": cost, "torch": torch.__version__,
                               "machine": {"cpu": platform.processor() or platform.machine(),
                                           "python": platform.python_version()}}, indent=1) + "\n")


if __name__ == "__main__":
    main()
