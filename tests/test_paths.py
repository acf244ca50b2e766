"""The results path grammar is written once (clgrid.paths): the rules see exactly these templates, the error hints
name the rule that makes each one, and a run's plan (clgrid.plan) reads the datasets the DAG gives its jobs."""

import pytest

from clgrid import paths, plan
from clgrid.io import producer_rule

EXAMPLE = {"benchmark": "split_digits", "backbone": "mlp", "method": "ewc~ewc_lambda=10", "other": "naive",
           "seed": 0, "task": 3, "dataset": "digits", "figure": "acc_matrix", "ext": "png", "table": "summary.csv",
           "name": "tables.tex"}


@pytest.mark.parametrize("template, rule", [
    (paths.DATASET, "prepare_dataset"), (paths.DATASET_META, "prepare_dataset"),
    (paths.SCENARIO, "prepare_scenario"), (paths.WEIGHTS_DONE, "download_weights"),
    (paths.INIT_MODEL, "init_model"), (paths.INIT_EVAL, "evaluate_init"), (paths.FEATURES, "extract_features"),
    (paths.TASK_STATE, "train_task"), (paths.resume_file(paths.TASK_STATE), "train_task"),
    (paths.TASK_EVAL, "train_task"), (paths.RUN_METRICS, "run_metrics"), (paths.RUN_ANALYSIS, "analyze_run"),
    (paths.RUN_COMPARISON, "compare_runs"), (paths.TABLE, "tables"), (paths.PUBLISHED, "published"),
    (paths.PAPER, "paper"), (paths.FIGURE, "figures"),
])
def test_every_template_names_the_rule_that_makes_it(template, rule):
    assert producer_rule(template.format(**EXAMPLE)) == rule
    assert producer_rule("/scratch/grid/" + template.format(**EXAMPLE)) == rule


def test_figures_of_the_analyses_and_sweeps_have_their_own_rules():
    for figure in paths.ANALYSIS_FIGURES:
        assert producer_rule(paths.FIGURE.format(**{**EXAMPLE, "figure": figure})) == "analysis_figures"
    assert producer_rule(paths.FIGURE.format(**{**EXAMPLE, "figure": "sweep"})) == "sweep_figure"
    assert producer_rule("results/notes.txt") is None


def test_the_templates_are_the_layout_the_rules_have_always_used():
    # A changed template moves every finished result: Snakemake would rebuild the whole grid.
    assert paths.TASK_STATE == "results/runs/{benchmark}/{backbone}/{method}/s{seed}/task{task}/state.pt"
    assert paths.INIT_MODEL == "results/init/{benchmark}/{backbone}/s{seed}/model.pt"
    assert paths.FEATURES == "results/features/{benchmark}/{backbone}/s{seed}/features.pt"
    assert paths.RUN_COMPARISON == "results/compare/{benchmark}/{backbone}/{method}__vs__{other}/s{seed}/cka.json"
    assert paths.raw_done("data") == "data/{dataset}/.clgrid_downloaded"


def test_a_zscl_run_trains_on_its_reference_dataset_outside_its_benchmark(default_config):
    config = {**default_config, "method_params": {**default_config["method_params"],
                                                  "zscl": {**default_config["method_params"]["zscl"],
                                                           "reference_dataset": "mnist"}}}
    assert plan.dataset_files(config, "split_digits") == ["results/data/digits.npz"]
    assert plan.run_dataset_files(config, "split_digits", "zscl") == ["results/data/digits.npz",
                                                                      "results/data/mnist.npz"]
    steps = plan.run_plan(config, "split_digits", "mlp", "zscl", 0)
    train = next(s for s in steps if s.rule == "train")
    assert train.inputs["data"] == ["results/data/digits.npz", "results/data/mnist.npz"]
    prepared = [s.outputs["data"] for s in steps if s.rule == "prepare_dataset"]
    assert prepared == train.inputs["data"]
    assert train.inputs["prev"] == plan.previous_state("split_digits", "mlp", "zscl", 0, 0)
    assert plan.previous_state("split_digits", "mlp", "zscl", 0, 2) == \
        "results/runs/split_digits/mlp/zscl/s0/task1/state.pt"
