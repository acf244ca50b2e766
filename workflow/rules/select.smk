# Selection studies (clgrid.config.selection): candidates on validation data, a selection checkpoint, final runs.
# Candidates are ordinary runs (folders under results/runs/), trained by the ordinary rules where they can be and by
# the rules here where their tasks differ: a first-k candidate trains k tasks, a per-task candidate continues from
# the state the task before chose. Nothing a selection reads was evaluated on a test set.

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


# What each selection chose, its candidates' validation scores, the final runs' test numbers with 95% intervals,
# and what the best test row would have reported; a figure per benchmark x backbone.
rule selection_report:
    input:
        unpack(selection_report_inputs),
        cost=table("cost.csv"),
    output:
        csv=table("selection.csv"),
        markdown=table_report(table("selection.md"), "selection"),
        figures=per_cell(FIGURE, figure=(paths.SELECTION_FIGURE,), ext=("png", "pdf")),
    params:
        out_dir=dir_of("csv"),
        figure_dirs=lambda wildcards, output: " ".join(sorted({os.path.dirname(p) for p in output.figures})),
    log:
        rule_log("selection_report"),
    benchmark:
        rule_bench("selection_report")
    conda:
        ENV
    shell:
        "clgrid selection-report --selections {input.selections} --stability {input.stability}"
        " --finals {input.finals} --test-rows {input.test_rows} --out-dir {params.out_dir}"
        " --figure-dirs {params.figure_dirs} --cost {input.cost} > {log} 2>&1"


# The per-task protocol (FACIL): for every seed and task, learning-rate candidates fine-tune from the state the task
# before chose (stability weight 0); select_plasticity picks the learning rate; stability candidates train with it
# and the weight halved from its start; the select_stability checkpoint picks the weight, and its choice is the
# state the next task's candidates (and the final run) continue from. Candidates of one task run in parallel.
rule train_per_task_candidate:
    input:
        unpack(per_task_lr),
        prev=per_task_prev,
        scenario=SCENARIO,
        data=run_dataset_files,
    output:
        state=TASK_STATE,
        acc=TASK_EVAL,
    params:
        **train_params(),
    threads: 1
    log:
        log_beside(TASK_STATE, "train"),
    benchmark:
        bench_beside(TASK_STATE, "train")
    resources:
        **job_resources(train_resource),
    wildcard_constraints:
        method=one_of(PER_TASK_CANDIDATES),
    conda:
        ENV
    shell:
        "clgrid train --spec {params.spec:q} --scenario {input.scenario} --data {input.data} --prev {input.prev}"
        " --task {wildcards.task} --threads {threads} --placement {params.placement}"
        " --checkpoint-every {params.checkpoint} {params.features} --out-state {output.state} --out-eval {output.acc}"
        " > {log} 2>&1"


for _other in TRAIN_RULES:
    workflow.ruleorder("train_per_task_candidate", _other)


rule select_plasticity:
    input:
        evals=task_candidate_evals("plasticity"),
    output:
        TASK_SELECTION.replace("{stage}", "plasticity"),
    params:
        spec=task_selection_spec("plasticity"),
    log:
        rule_log("select_plasticity", "{benchmark}/{backbone}/{base}/s{seed}/task{task}"),
    benchmark:
        rule_bench("select_plasticity", "{benchmark}/{backbone}/{base}/s{seed}/task{task}")
    conda:
        ENV
    shell:
        "clgrid select-task --spec {params.spec:q} --evals {input.evals} --out {output} > {log} 2>&1"


checkpoint select_stability:
    input:
        evals=task_candidate_evals("stability"),
        plasticity=TASK_SELECTION.replace("{stage}", "plasticity"),
    output:
        TASK_SELECTION.replace("{stage}", "stability"),
    params:
        spec=task_selection_spec("stability"),
    log:
        rule_log("select_stability", "{benchmark}/{backbone}/{base}/s{seed}/task{task}"),
    benchmark:
        rule_bench("select_stability", "{benchmark}/{backbone}/{base}/s{seed}/task{task}")
    conda:
        ENV
    shell:
        "clgrid select-task --spec {params.spec:q} --evals {input.evals} --plasticity {input.plasticity}"
        " --out {output} > {log} 2>&1"


# A per-task final run's task state is the chosen candidate's, evaluated on the test sets.
rule adopt_selected:
    input:
        state=adopted_state,
        choice=adopted_choice,
        scenario=SCENARIO,
        data=run_dataset_files,
    output:
        state=TASK_STATE,
        acc=TASK_EVAL,
    params:
        spec=run_spec,
    threads: 1
    log:
        log_beside(TASK_STATE, "adopt"),
    benchmark:
        bench_beside(TASK_STATE, "adopt")
    resources:
        **job_resources(init_resource),
    wildcard_constraints:
        method=one_of(PER_TASK_FINALS),
    conda:
        ENV
    shell:
        "clgrid adopt --spec {params.spec:q} --scenario {input.scenario} --data {input.data} --state {input.state}"
        " --choice {input.choice} --task {wildcards.task} --out-state {output.state} --out-eval {output.acc}"
        " --threads {threads} > {log} 2>&1"


for _other in TRAIN_RULES:
    workflow.ruleorder("adopt_selected", _other)
