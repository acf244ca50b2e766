# Accuracy after task t is written by train_task itself. Here: the initial model's accuracy
# on every task (b_i, for FWT), and each run's accuracy matrix and metrics.


rule evaluate_init:
    input:
        scenario=SCENARIO,
        data=dataset_files,
        state=INIT_MODEL,
    output:
        INIT_EVAL,
    params:
        spec=init_spec,
    threads: 1
    log:
        log_beside(INIT_EVAL, "eval"),
    benchmark:
        bench_beside(INIT_EVAL, "eval")
    resources:
        **job_resources(init_resource),
    conda:
        ENV
    shell:
        "clgrid evaluate --spec {params.spec:q} --scenario {input.scenario} --data {input.data}"
        " --state {input.state} --out {output} --threads {threads} > {log} 2>&1"


# The metrics record the checksum of every checkpoint they describe, so a deleted or
# replaced state is rebuilt (with everything after it) before the metrics are.
rule run_metrics:
    input:
        unpack(selection_inputs),
        init=INIT_EVAL,
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
    conda:
        ENV
    shell:
        "clgrid metrics --spec {params.spec:q} --init-eval {input.init} --evals {input.evals} --states {input.states}"
        " --out {output} > {log} 2>&1"
