"""Choosing hyperparameters on validation data (clgrid.selection): the tie rule, the whole-stream choice and its
refusal of test-evaluated metrics, FACIL's per-task rules against a hand-worked sequence, and how a final run and a
per-task candidate read what was chosen."""

import json
import math

import pytest

from clgrid import selection
from clgrid.io import write_json
from clgrid.spec import RunSpec


def test_tie_goes_to_the_first_listed_and_nan_never_wins():
    assert selection.best_index([50.0, 70.0, 70.0]) == 1  # a tie: the first of the two
    assert selection.best_index([70.0, 70.0 + 1e-12, 69.0]) == 0  # within 1e-9 is a tie
    assert selection.best_index([math.nan, 10.0, 20.0]) == 2  # a diverged candidate never wins
    assert selection.best_index([math.nan, math.nan]) == 0  # nothing measured: the first
    assert selection.best_index([30.0, 10.0, 10.0], higher_is_better=False) == 1  # forgetting: lower is better


def _metrics(path, method, seed, acc, evaluated_on="validation"):
    record = {"method": method, "seed": seed, "metrics": {"acc": acc, "forgetting": 100 - acc}}
    if evaluated_on:
        record["evaluated_on"] = evaluated_on
    write_json(path, record)
    return str(path)


SPEC = {"base": "ewc", "protocol": "whole_stream", "metric": "acc", "higher_is_better": True, "seeds": [0, 1],
        "candidates": [["ewc~val~ewc_lambda=1", {"ewc_lambda": 1}], ["ewc~val~ewc_lambda=10", {"ewc_lambda": 10}],
                       ["ewc~val~ewc_lambda=100", {"ewc_lambda": 100}]]}


def test_whole_stream_choice_is_the_best_mean_over_seeds(tmp_path):
    # lambda=1: (60+70)/2 = 65; lambda=10: (80+56)/2 = 68 (best mean, although seed 1 is worse); lambda=100: 66.
    scores = {"ewc~val~ewc_lambda=1": (60, 70), "ewc~val~ewc_lambda=10": (80, 56), "ewc~val~ewc_lambda=100": (66, 66)}
    files = [_metrics(tmp_path / f"{i}_{s}.json", name, s, acc[s])
             for i, (name, acc) in enumerate(scores.items()) for s in (0, 1)]
    record = selection.select_from_metrics(SPEC, files)
    assert record["chosen"] == "ewc~val~ewc_lambda=10" and record["values"] == {"ewc_lambda": 10}
    assert [c["score"] for c in record["candidates"]] == [65.0, 68.0, 66.0]
    assert record["candidates"][1]["per_seed"] == {"0": 80.0, "1": 56.0}
    # by forgetting (lower is better): 35, 32, 34 -> lambda=10 again
    by_forgetting = selection.select_from_metrics({**SPEC, "metric": "forgetting", "higher_is_better": False}, files)
    assert [c["score"] for c in by_forgetting["candidates"]] == [35.0, 32.0, 34.0]


def test_a_selection_refuses_metrics_not_evaluated_on_validation(tmp_path):
    files = [_metrics(tmp_path / f"{i}.json", name, s, 50.0) for i, (name, s) in
             enumerate((n, s) for n, _ in SPEC["candidates"] for s in (0, 1))]
    files[3] = _metrics(tmp_path / "test.json", "ewc~val~ewc_lambda=10", 1, 99.0, evaluated_on=None)
    with pytest.raises(ValueError, match="not evaluated on validation data"):
        selection.select_from_metrics(SPEC, files)


def test_the_tie_rule_follows_the_sweeps_order_not_the_names(tmp_path):
    # lambda=30 is listed before lambda=100, and "ewc~val~ewc_lambda=100" sorts before "...=30" as text: the sweep's
    # order decides a tie.
    spec = {**SPEC, "seeds": [0], "candidates": [["ewc~val~ewc_lambda=30", {"ewc_lambda": 30}],
                                                 ["ewc~val~ewc_lambda=100", {"ewc_lambda": 100}]]}
    files = [_metrics(tmp_path / "a.json", "ewc~val~ewc_lambda=100", 0, 70.0),
             _metrics(tmp_path / "b.json", "ewc~val~ewc_lambda=30", 0, 70.0)]
    assert selection.select_from_metrics(spec, files)["values"] == {"ewc_lambda": 30}


def test_a_selection_needs_every_seed_of_every_candidate(tmp_path):
    files = [_metrics(tmp_path / f"{i}.json", name, 0, 50.0) for i, (name, _) in enumerate(SPEC["candidates"])]
    with pytest.raises(ValueError, match="lacks the metrics of seed"):
        selection.select_from_metrics(SPEC, files)


def test_facil_rules_on_a_hand_worked_sequence():
    """FACIL (Masana et al. 2022): lr of the best fine-tuning accuracy on the new task; then the weight halved from
    its start until the new task's accuracy reaches fraction x plasticity.

    Task 1 by hand: fine-tuning accuracies 62 (lr 0.1), 81 (lr 0.05), 81 (lr 0.01) -> lr 0.05 (first of the tie),
    plasticity 81; fraction 0.8 -> threshold 64.8. Weights 1000, 500, 250, 125 reach 40, 58, 66, 75: 1000 and 500
    fall short, 250 is the first to reach it -> 250 (not 125, although 125 is more plastic).
    Task 2: none of 20, 30, 40, 50 reaches 0.8 x 90 = 72 -> the smallest weight, 125."""
    assert selection.facil_plasticity([62.0, 81.0, 81.0]) == 1
    weights = [1000.0, 500.0, 250.0, 125.0]
    assert selection.facil_stability(weights, [40.0, 58.0, 66.0, 75.0], 81.0, 0.8) == 2
    assert selection.facil_stability(weights, [20.0, 30.0, 40.0, 50.0], 90.0, 0.8) == 3
    assert selection.facil_stability(weights, [64.8, 70.0, 71.0, 72.0], 81.0, 0.8) == 0  # exactly the threshold
    assert selection.facil_stability(weights, [math.nan, 70.0, 71.0, 72.0], 81.0, 0.8) == 1  # diverged: not reached


def _eval(path, accs, evaluated_on="validation"):
    write_json(path, {"after_task": 1, "acc": accs, "acc_task_il": [a + 10 for a in accs],
                      **({"evaluated_on": evaluated_on} if evaluated_on else {})})
    return str(path)


def test_select_task_writes_the_hand_worked_choices(tmp_path):
    lr_evals = [_eval(tmp_path / f"lr{i}.json", [90.0, acc, 0.0]) for i, acc in enumerate((62.0, 81.0, 81.0))]
    plasticity_spec = {"base": "ewc", "seed": 0, "task": 1, "stage": "plasticity", "lrs": [0.1, 0.05, 0.01],
                       "candidates": ["ewc~pt~lr=0.1", "ewc~pt~lr=0.05", "ewc~pt~lr=0.01"],
                       "states": ["a.pt", "b.pt", "c.pt"]}
    selection.select_task(plasticity_spec, lr_evals, str(tmp_path / "plasticity.json"))
    chosen_lr = json.loads((tmp_path / "plasticity.json").read_text())
    assert chosen_lr["lr"] == 0.05 and chosen_lr["plasticity"] == 81.0 and chosen_lr["chosen"] == "ewc~pt~lr=0.05"

    weight_evals = [_eval(tmp_path / f"w{i}.json", [70.0, acc, 0.0]) for i, acc in enumerate((40.0, 58.0, 66.0, 75.0))]
    names = [f"ewc~pt~ewc_lambda={w}" for w in (1000, 500, 250, 125)]
    stability_spec = {"base": "ewc", "seed": 0, "task": 1, "stage": "stability", "weights": [1000.0, 500.0, 250.0, 125.0],
                      "fraction": 0.8, "stability_key": "ewc_lambda", "candidates": names,
                      "states": [f"s{i}.pt" for i in range(4)]}
    selection.select_task(stability_spec, weight_evals, str(tmp_path / "stability.json"),
                          str(tmp_path / "plasticity.json"))
    chosen = json.loads((tmp_path / "stability.json").read_text())
    assert chosen["ewc_lambda"] == 250.0 and chosen["state"] == "s2.pt" and chosen["lr"] == 0.05
    assert chosen["threshold"] == pytest.approx(64.8) and chosen["reached"] is True

    # task-IL headline: the task-IL row decides (here every candidate +10, the same choice)
    selection.select_task({**plasticity_spec, "headline": "task_il"}, lr_evals, str(tmp_path / "til.json"))
    assert json.loads((tmp_path / "til.json").read_text())["plasticity"] == 91.0

    test_evaluated = [_eval(tmp_path / "t.json", [0.0, 99.0, 0.0], evaluated_on=None)] + lr_evals[1:]
    with pytest.raises(ValueError, match="not evaluated on validation data"):
        selection.select_task(plasticity_spec, test_evaluated, str(tmp_path / "never.json"))


RUN = {"benchmark": "b", "benchmark_cfg": {"scenario": "class_incremental"}, "backbone": "mlp", "backbone_cfg": {},
       "seed": 0, "device": "cpu", "method": "ewc~selected", "method_name": "ewc",
       "method_params": {"ewc_lambda": 5.0, "fisher_samples": None}, "train": {"lr": 0.1, "epochs": 1}}


def test_a_final_run_trains_with_the_chosen_values_and_records_them(tmp_path):
    chosen = tmp_path / "selection.json"
    write_json(chosen, {"chosen": "ewc~val~ewc_lambda=10,lr=0.01", "values": {"ewc_lambda": 10, "lr": 0.01}})
    spec = RunSpec.from_json({**RUN, "selection": {"role": "final", "base": "ewc", "protocol": "whole_stream",
                                                    "file": str(chosen)}})
    resolved = selection.resolved(spec)
    assert resolved.method_params == {"ewc_lambda": 10, "fisher_samples": None}
    assert resolved.train == {"lr": 0.01, "epochs": 1}
    assert resolved.selection["values"] == {"ewc_lambda": 10, "lr": 0.01}
    assert resolved.selection["chosen"] == "ewc~val~ewc_lambda=10,lr=0.01"
    assert len(resolved.selection["file_sha256"]) == 64
    assert resolved.config_hash != spec.config_hash  # the chosen values are in the provenance's hash
    plain = RunSpec.from_json(RUN)
    assert selection.resolved(plain) is plain


def test_a_stability_candidate_trains_with_its_tasks_chosen_lr(tmp_path):
    write_json(tmp_path / "task2.json", {"lr": 0.03})
    spec = RunSpec.from_json({**RUN, "method": "ewc~pt~ewc_lambda=500", "evaluate_on": "validation",
                              "selection": {"role": "candidate", "base": "ewc", "protocol": "per_task",
                                            "stage": "stability", "values": {"ewc_lambda": 500},
                                            "lr_from": str(tmp_path / "task{task}.json")}})
    assert selection.resolved(spec, 2).train["lr"] == 0.03
    with pytest.raises(FileNotFoundError):
        selection.resolved(spec, 3)
