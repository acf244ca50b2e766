# Accuracy after task t is written by train_task itself (same process, no second torch start-up).
# Here: the initial model's accuracy on every task (b_i for FWT), and each run's metrics.


rule evaluate_init:
    input:
        scenario=SCENARIO,
        data=dataset_files,
        state=INIT + "/model.pt",
    output:
        INIT + "/eval.json",
    params:
        spec=init_spec,
    threads: 1
    log:
        INIT + "/eval.log",
    benchmark:
        INIT + "/eval.bench.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "clgrid evaluate --spec {params.spec:q} --scenario {input.scenario} --data {input.data}"
        " --state {input.state} --out {output} --threads {threads} > {log} 2>&1"


rule run_metrics:
    input:
        init=INIT + "/eval.json",
        evals=task_evals,
    output:
        RUN + "/metrics.json",
    params:
        spec=run_spec,
    log:
        RUN + "/metrics.log",
    benchmark:
        RUN + "/metrics.bench.tsv"
    conda:
        ENV
    shell:
        "clgrid metrics --spec {params.spec:q} --init-eval {input.init} --evals {input.evals}"
        " --out {output} > {log} 2>&1"
