"""The frozen-feature cache against recomputing the backbone: 5 methods x 3 seeds of a frozen-backbone grid, in one run.

Both arms run the same grid through Snakemake in fresh copies of the workflow (``feature_cache: true`` and
``false``), on 2 cores. Backbone compute is counted, not estimated: every training job records the samples it sent
through the backbone (a forward pre-hook; its train.log says how many), the cache job records the
samples it extracted (the initial evaluations, alike in both arms, are left out). Prints samples through
the backbone and wall time of each arm and their ratios, checks that both arms' accuracies agree, and writes
``benchmarks/results/feature_cache.json``.

    python benchmarks/feature_cache.py [--epochs 3] [--backbone resnet50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
METHODS = ["naive", "ewc", "lwf", "replay", "der"]
BACKBONES = {
    "resnet50": {"arch": "resnet50"},
    "resnet18": {"arch": "resnet18", "width": 32},
    "cnn": {"arch": "cnn", "channels": [32, 64]},
}


def grid_config(epochs: int, backbone: str, cache: bool) -> dict:
    return {
        "seeds": [0, 1, 2],
        "feature_cache": cache,
        "benchmarks": {"split_digits": {
            "dataset": "digits", "scenario": "class_incremental", "n_tasks": 5,
            "train": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "epochs": epochs, "batch_size": 32,
                      "clip_grad_value": 1.0}}},
        "backbones": {backbone: BACKBONES[backbone]},
        "methods": [f"{m}_frozen" for m in METHODS],
        "variants": {f"{m}_frozen": {"method": m, "params": {"freeze": "all"}} for m in METHODS},
    }


def run_arm(root: Path, config: dict) -> dict:
    for name in ("Snakefile", "workflow", "config", "envs", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    config_path = root / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # Data and scenario first, untimed: both arms need them alike.
    def snakemake(target: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", target, "--configfile",
                               str(config_path)], cwd=root, capture_output=True, text=True, env=env)

    snakemake("results/scenarios/split_digits.json")
    start = time.perf_counter()
    out = snakemake("results/tables/summary.csv")
    wall = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    import torch

    train_samples = 0
    for log in root.glob("results/runs/**/train.log"):
        counts = re.findall(r"samples through the backbone in this job: (\d+)", log.read_text())
        if not counts:
            raise RuntimeError(f"{log} does not report its backbone samples")
        train_samples += int(counts[-1])
    cache_samples = sum(torch.load(p, weights_only=False)["backbone_samples"]
                        for p in root.glob("results/features/**/features.pt"))
    acc = {}
    for path in root.glob("results/runs/**/metrics.json"):
        metrics = json.loads(path.read_text())
        acc[metrics["run"]] = metrics["metrics"]["acc"]
    jobs = len(list(root.glob("results/runs/**/state.pt"))) + len(list(root.glob("results/features/**/features.pt")))
    return {"wall_s": round(wall, 1), "backbone_samples_training": train_samples,
            "backbone_samples_cache": cache_samples, "backbone_samples": train_samples + cache_samples,
            "train_and_feature_jobs": jobs, "acc": acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet50")
    args = parser.parse_args()
    arms = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cache in (("without_cache", False), ("with_cache", True)):
            root = Path(tmp) / name
            root.mkdir()
            arms[name] = run_arm(root, grid_config(args.epochs, args.backbone, cache))
            print(f"{name}: {arms[name]['backbone_samples']:,} samples through the backbone, "
                  f"{arms[name]['wall_s']} s wall", flush=True)
    before, after = arms["without_cache"], arms["with_cache"]
    diffs = sorted(((abs(before["acc"][run] - after["acc"][run]), run) for run in before["acc"]), reverse=True)
    acc_diff = diffs[0][0]
    result = {
        "grid": f"split_digits, {args.backbone} {BACKBONES[args.backbone]} frozen (freeze: all), methods {METHODS}, "
                f"seeds [0, 1, 2], 5 tasks, {args.epochs} epochs, snakemake --cores 2",
        "without_cache": {k: v for k, v in before.items() if k != "acc"},
        "with_cache": {k: v for k, v in after.items() if k != "acc"},
        "backbone_samples_ratio": round(before["backbone_samples"] / after["backbone_samples"], 1),
        "wall_ratio": round(before["wall_s"] / after["wall_s"], 2),
        "max_final_acc_difference_pct_points": round(acc_diff, 3),
        "largest_final_acc_differences": [{"run": run, "without_cache": before["acc"][run],
                                            "with_cache": after["acc"][run]} for _, run in diffs[:5]],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    print(f"backbone samples: {before['backbone_samples']:,} -> {after['backbone_samples']:,} "
          f"(x{result['backbone_samples_ratio']} fewer); wall {before['wall_s']} s -> {after['wall_s']} s "
          f"(x{result['wall_ratio']}); largest final-ACC difference between the arms: {acc_diff:.3f} points")
    out = REPO / "benchmarks" / "results" / "feature_cache.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
