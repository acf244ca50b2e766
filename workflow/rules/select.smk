# Selection studies (clgrid.config.selection): candidates on validation data, a selection checkpoint, final runs.
# Candidates are ordinary runs (folders under results/runs/), trained by the ordinary rules where they can be and by
# the rules here where their tasks differ: a first-k candidate trains k tasks, a per-task candidate continues from
# the state the task before chose. Nothing a selection reads was evaluated on a test set.

SELECTIONS = cl_selection.finals(config)
CANDIDATE_RUNS = sorted({run.method for run in cl_selection.candidate_runs(config)})
_ROLE = {name: cl_selection.selection_of(config, name) for name in CANDIDATE_RUNS + list(SELECTIONS)}
VALIDATION_CANDIDATES = [n for n, r in _ROLE.items() if r["role"] == "candidate" and r["protocol"] != "per_task"]
PER_TASK_CANDIDATES = [n for n, r in _ROLE.items() if r["role"] == "candidate" and r["protocol"] == "per_task"]
PER_TASK_FINALS = [n for n, r in SELECTIONS.items() if r["protocol"] == "per_task"]
FIRST_K = sorted({int(r["k"]) for r in SELECTIONS.values() if r["protocol"] == "first_k"})
TRAIN_RULES = ["train_task"] + [f"train_{b}_tasks{a}to{z}" for b, chunks in TRAIN_CHUNKS.items()
                                if b not in PER_TASK_BENCHMARKS for a, z in chunks]


def base_of_selection(wildcards):
    return cl_selection.selection_of(config, wildcards.method)["base"]


def selection_spec(wildcards):
    """What the select job needs: the candidates (in the sweep's order) with their values, metric, direction."""
    record = SELECTIONS[cl_selection.final_name(wildcards.base)]
    return as_json({
        "base": wildcards.base, "protocol": record["protocol"], "metric": record["metric"],
        "higher_is_better": cl_metric_catalog.higher_is_better(record["metric"]),
        "candidates": {name: _ROLE[name]["values"] for name in record["candidates"]},
        "seeds": cl_selection.candidate_seeds(config, cl_selection.final_name(wildcards.base)),
        **({"k": record["k"]} if "k" in record else {}),
    })


def selection_metrics(wildcards):
    """Every candidate's validation metrics of one selection, candidates in the sweep's order, then seeds."""
    final = cl_selection.final_name(wildcards.base)
    return [RUN_METRICS.format(benchmark=wildcards.benchmark, backbone=wildcards.backbone, method=name, seed=seed)
            for name in SELECTIONS[final]["candidates"] for seed in cl_selection.candidate_seeds(config, final)]


# The initial model's accuracy on the validation splits: a candidate's FWT baseline (the test-set one is never read).
rule evaluate_init_validation:
    input:
        scenario=SCENARIO,
        data=dataset_files,
        state=INIT_MODEL,
    output:
        INIT_EVAL_VALIDATION,
    params:
        spec=lambda wildcards: as_json({**cl.init_spec(config, wildcards.benchmark, wildcards.backbone,
                                                       int(wildcards.seed)), "evaluate_on": "validation"}),
    threads: 1
    log:
        log_beside(INIT_EVAL_VALIDATION, "eval_validation"),
    benchmark:
        bench_beside(INIT_EVAL_VALIDATION, "eval_validation")
    resources:
        **job_resources(init_resource),
    conda:
        ENV
    shell:
        "clgrid evaluate --spec {params.spec:q} --scenario {input.scenario} --data {input.data}"
        " --state {input.state} --out {output} --threads {threads} > {log} 2>&1"


# A candidate's metrics: its validation matrix against the initial model's validation accuracy.
rule candidate_metrics:
    input:
        init=INIT_EVAL_VALIDATION,
        evals=task_evals,
        states=task_states,
    output:
        RUN_METRICS,
    params:
        spec=run_spec,
    log:
        log_beside(RUN_METRICS, "metrics"),
    benchmark:
        bench_beside(RUN_METRICS, "metrics")
    wildcard_constraints:
        method=one_of(VALIDATION_CANDIDATES),
    conda:
        ENV
    shell:
        "clgrid metrics --spec {params.spec:q} --init-eval {input.init} --evals {input.evals} --states {input.states}"
        " --out {output} > {log} 2>&1"


ruleorder: candidate_metrics > run_metrics


# A first-k candidate trains tasks 0..k-1 in one job (the same code and files as any training job).
for _k in FIRST_K:
    _tasks = list(range(_k))

    rule:
        name:
            f"train_first{_k}_candidate"
        input:
            scenario=SCENARIO,
            data=run_dataset_files,
            prev=chunk_previous_state(0),
        output:
            states=task_files(TASK_STATE, _tasks),
            evals=task_files(TASK_EVAL, _tasks),
        params:
            **train_params(_tasks),
        threads: 1
        log:
            **chunk_logs(_tasks),
        benchmark:
            bench_beside(RUN_METRICS, f"train_tasks0to{_k - 1}")
        resources:
            **job_resources(train_resource, _k),
        wildcard_constraints:
            method=one_of([n for n in VALIDATION_CANDIDATES if _ROLE[n].get("k") == _k]),
        conda:
            ENV
        shell:
            "clgrid train --spec {params.spec:q} --scenario {input.scenario} --data {input.data} --prev {input.prev}"
            " --task {params.tasks} --threads {threads} --placement {params.placement}"
            " --checkpoint-every {params.checkpoint} {params.features} --out-state {output.states}"
            " --out-eval {output.evals} --task-logs {log.tasks} > {log.job} 2>&1"

    for _other in TRAIN_RULES:
        workflow.ruleorder(f"train_first{_k}_candidate", _other)


# The selection: every candidate's validation score, the chosen values. A checkpoint: the final runs' jobs are
# planned once it has run, from its output.
checkpoint select_hyperparameters:
    input:
        selection_metrics,
    output:
        SELECTION,
    params:
        spec=selection_spec,
    log:
        rule_log("select_hyperparameters", "{benchmark}/{backbone}/{base}"),
    benchmark:
        rule_bench("select_hyperparameters", "{benchmark}/{backbone}/{base}")
    conda:
        ENV
    shell:
        "clgrid select --spec {params.spec:q} --metrics {input} --out {output} > {log} 2>&1"


def selection_report_inputs(wildcards=None):
    """What the selection report reads: the selections' files, the final runs' and test rows' test metrics."""
    finals = [RUN_METRICS.format(**vars(run)) for run in cl.runs(config) if run.method in SELECTIONS]
    rows = [RUN_METRICS.format(**vars(run)) for run in cl_selection.candidate_runs(config)
            if _ROLE[run.method]["role"] == "test_row"]
    stability = [TASK_SELECTION.format(benchmark=run.benchmark, backbone=run.backbone, base=SELECTIONS[run.method]["base"],
                                       seed=run.seed, task=t, stage="stability")
                 for run in cl.runs(config) if run.method in PER_TASK_FINALS
                 for t in range(cl.n_tasks(config, run.benchmark))]
    return {"selections": cl_selection.selection_files(config), "stability": stability, "finals": finals,
            "test_rows": rows}


# What each selection chose, its candidates' validation scores, the final runs' test numbers with 95% intervals,
# and what the best test row would have reported; a figure per benchmark x backbone.
rule selection_report:
    input:
        unpack(selection_report_inputs),
    output:
        csv=table("selection.csv"),
        markdown=report(table("selection.md"), caption="../report/selection.rst", category="Tables"),
        figures=per_cell(FIGURE, figure=(paths.SELECTION_FIGURE,), ext=("png", "pdf")),
    params:
        out_dir=dir_of("csv"),
        figure_dirs=lambda wildcards: " ".join(sorted({os.path.dirname(p) for p in
                                                       per_cell(FIGURE, figure=("x",), ext=("png",))})),
    log:
        rule_log("selection_report"),
    benchmark:
        rule_bench("selection_report")
    conda:
        ENV
    shell:
        "clgrid selection-report --selections {input.selections} --stability {input.stability}"
        " --finals {input.finals} --test-rows {input.test_rows} --out-dir {params.out_dir}"
        " --figure-dirs {params.figure_dirs} > {log} 2>&1"
