"""Selection studies run for real by Snakemake on digits: the three protocols end to end; no job a selection reads
was evaluated on a test set; the final runs train with (and record) the chosen values; and a new candidate value
replans only its own runs, the selection and what depends on the selection."""

import json

import pytest
import yaml

from tests.conftest import copy_workflow
from tests.test_workflow import planned_jobs, snakemake

pytestmark = pytest.mark.e2e

CONFIG = {
    "seeds": [0, 1],
    "benchmarks": {"split_digits": {
        "dataset": "digits", "scenario": "class_incremental", "n_tasks": 2, "validation": {"fraction": 0.2},
        "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "epochs": 1, "batch_size": 32,
                  "on_divergence": "record"}}},
    "backbones": {"mlp": {"arch": "mlp", "hidden": [16]}},
    "methods": ["ewc", "si", "lwf"],
    "sweeps": {
        "ewc": {"params": {"ewc_lambda": [1, 10]}, "select": {"protocol": "whole_stream", "test_rows": True}},
        "si": {"params": {"c": [0.1, 1.0]}, "select": {"protocol": "first_k", "k": 1}},
        "lwf": {"train": {"lr": [0.01, 0.05]}, "select": {"protocol": "per_task", "stability": "lwf_alpha",
                                                         "start": 4, "halvings": 1, "fraction": 0.8}},
    },
}


def read(root, path):
    return json.loads((root / path).read_text())


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = copy_workflow(tmp_path_factory.mktemp("select"))
    config = root / "select.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    snakemake(root, "--cores", "2", "--configfile", str(config))
    return root, config


RUNS = "results/runs/split_digits/mlp"


def test_every_protocol_runs_and_reports(study):
    root, _ = study
    for base in ("ewc", "si"):
        chosen = read(root, f"results/selection/split_digits/mlp/{base}/selection.json")
        assert chosen["chosen"] in [c["run"] for c in chosen["candidates"]] and len(chosen["candidates"]) == 2
    for seed in (0, 1):
        for task in (0, 1):
            stability = read(root, f"results/selection/split_digits/mlp/lwf/s{seed}/task{task}/stability.json")
            assert stability["lwf_alpha"] in (4.0, 2.0) and stability["lr"] in (0.01, 0.05)
    text = (root / "results/tables/selection.md").read_text()
    for words in ("split_digits / mlp / ewc: whole_stream", "first_k (k=1)", "per task (FACIL)", "95% CI",
                  "Picking the best test row instead"):
        assert words in text, words
    assert (root / "results/figures/split_digits/mlp/selection.png").stat().st_size > 5000
    runs = set(__import__("pandas").read_csv(root / "results/tables/runs.csv")["method"])
    assert runs == {"ewc~selected", "si~selected", "lwf~selected"}  # candidates and test rows stay out


def test_no_selection_input_was_evaluated_on_test_data(study):
    """Every file a selection job read says it was evaluated on validation splits, and so does every eval.json of
    every candidate (the jobs' datasets refuse their test arrays: tests/test_context.py)."""
    root, _ = study
    candidates = [p for p in (root / RUNS).iterdir() if "~val~" in p.name or "~first1~" in p.name or "~pt~" in p.name]
    assert len(candidates) == 2 + 2 + 4
    for run in candidates:
        for eval_file in run.glob("s*/task*/eval.json"):
            assert read(root, eval_file)["evaluated_on"] == "validation", eval_file
        for metrics in run.glob("s*/metrics.json"):
            assert read(root, metrics)["evaluated_on"] == "validation", metrics
    for selection in (root / "results/selection").rglob("*.json"):
        record = read(root, selection)
        for candidate in record["candidates"]:
            assert any(k in candidate["run"] for k in ("~val~", "~first1~", "~pt~")), candidate
    # the tests rows and final runs: test sets
    assert "evaluated_on" not in read(root, f"{RUNS}/ewc~test~ewc_lambda=1/s0/metrics.json")
    assert "evaluated_on" not in read(root, f"{RUNS}/ewc~selected/s0/task1/eval.json")


def test_final_runs_train_with_and_record_the_chosen_values(study):
    root, _ = study
    chosen = read(root, "results/selection/split_digits/mlp/si/selection.json")
    metrics = read(root, f"{RUNS}/si~selected/s1/metrics.json")
    assert metrics["selection"]["values"] == chosen["values"] and metrics["selection"]["k"] == 1
    assert "acc_after_k" in metrics["metrics"]
    assert metrics["metrics"]["acc_after_k"] == metrics["acc_matrix"][-1][1]  # k=1 of 2 tasks: task 1's final acc
    state_spec = read(root, f"{RUNS}/si~selected/s1/task0/eval.json")["provenance"]
    assert state_spec["config_hash"] == metrics["provenance"]["config_hash"]
    per_task = read(root, f"{RUNS}/lwf~selected/s0/metrics.json")["selection"]["per_task"]
    for task, row in enumerate(per_task):
        picked = read(root, f"results/selection/split_digits/mlp/lwf/s0/task{task}/stability.json")
        assert row["task"] == task and row["lwf_alpha"] == picked["lwf_alpha"] and row["lr"] == picked["lr"]


def test_a_new_candidate_value_replans_only_what_depends_on_it(study):
    root, config = study
    edited = yaml.safe_load(config.read_text())
    edited["sweeps"]["ewc"]["params"]["ewc_lambda"] = [1, 10, 100]
    (root / "more.yaml").write_text(yaml.safe_dump(edited))
    jobs = planned_jobs(root, "--configfile", str(root / "more.yaml"))
    # the new candidate and its test row (2 seeds each: one training job and one metrics job per run), the
    # selection, the final ewc runs, and the cheap report jobs; nothing of si, lwf or the old candidates.
    assert jobs.pop("train_split_digits_tasks0to1") == 2 + 2 + 2
    assert jobs.pop("candidate_metrics") == 2 and jobs.pop("run_metrics") == 2 + 2
    assert jobs.pop("select_hyperparameters") == 1 and jobs.pop("analyze_run") == 2  # the final ewc runs' analyses
    assert set(jobs) <= {"selection_report", "tables", "figures", "analysis_figures", "paper", "all", "cost_tables",
                         "cost_figure",
                         "evaluate_init_validation"}, jobs
    assert "evaluate_init_validation" not in jobs
