"""Experiment config → the grid of runs and the resolved spec each job receives.

The Snakemake layer validates the YAML against ``workflow/schemas/config.schema.yaml``
(which also fills defaults) and then calls ``check_config`` for the rules a
schema cannot express. A run is (benchmark, backbone, method, seed); its folder
is ``results/runs/{benchmark}/{backbone}/{method}/s{seed}``. A job gets only the
part of the config that can change its result, as JSON, so Snakemake reruns a
job when that part changes and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clgrid.data.datasets import DATASETS


class ConfigError(ValueError):
    """A config that passed the schema but cannot describe a runnable grid."""


@dataclass(frozen=True)
class Run:
    benchmark: str
    backbone: str
    method: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.benchmark}/{self.backbone}/{self.method}/s{self.seed}"


def check_config(config: dict[str, Any]) -> None:
    """Cross-field checks the schema cannot express; errors name the field and the fix."""
    for name, bench in config["benchmarks"].items():
        info = DATASETS[bench["dataset"]]
        if bench["scenario"] == "class_incremental" and info.n_classes % bench["n_tasks"]:
            valid = [k for k in range(1, info.n_classes + 1) if info.n_classes % k == 0]
            raise ConfigError(
                f"benchmarks.{name}.n_tasks = {bench['n_tasks']} does not split the {info.n_classes} classes "
                f"of '{info.name}' into equal tasks; valid: {valid}"
            )


def runs(config: dict[str, Any]) -> list[Run]:
    """Every run of the grid: benchmarks × backbones × methods × seeds, in config order."""
    return [
        Run(benchmark, backbone, method, int(seed))
        for benchmark in config["benchmarks"]
        for backbone in config["backbones"]
        for method in config["methods"]
        for seed in config["seeds"]
    ]


def n_tasks(config: dict[str, Any], benchmark: str) -> int:
    return int(config["benchmarks"][benchmark]["n_tasks"])


def datasets_of(config: dict[str, Any], benchmark: str) -> list[str]:
    """The datasets a benchmark's tasks draw from (one today; a dataset sequence names several)."""
    return [config["benchmarks"][benchmark]["dataset"]]


def scenario_spec(config: dict[str, Any], benchmark: str) -> dict[str, Any]:
    return {"benchmark": benchmark, "benchmark_cfg": _without_train(config["benchmarks"][benchmark])}


def init_spec(config: dict[str, Any], benchmark: str, backbone: str, seed: int) -> dict[str, Any]:
    """What fixes a seed's initial weights: the scenario (head size), the backbone and the seed."""
    return {
        **scenario_spec(config, benchmark),
        "backbone": backbone,
        "backbone_cfg": config["backbones"][backbone],
        "seed": int(seed),
        "device": config["device"],
    }


def run_spec(config: dict[str, Any], benchmark: str, backbone: str, method: str, seed: int) -> dict[str, Any]:
    """Everything that can change a run's numbers: the init spec plus training and method settings."""
    return {
        **init_spec(config, benchmark, backbone, seed),
        "train": config["benchmarks"][benchmark]["train"],
        "method": method,
        "method_name": method,
        "method_params": config.get("method_params", {}).get(method, {}),
    }


def analysis_spec(config: dict[str, Any], benchmark: str, backbone: str, method: str, seed: int) -> dict[str, Any]:
    """A run's spec plus the analysis settings: changing them reruns the analyses, not the training."""
    return {**run_spec(config, benchmark, backbone, method, seed), "analysis": config["analysis"]}


def _without_train(bench: dict[str, Any]) -> dict[str, Any]:
    # Training settings do not change the task splits, so they stay out of the scenario's spec.
    return {k: v for k, v in bench.items() if k != "train"}
