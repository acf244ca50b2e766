# One job per (run, task): the state after task t-1 becomes the state after task t.


rule init_model:
    input:
        scenario=SCENARIO,
    output:
        INIT + "/model.pt",
    params:
        spec=init_spec,
    log:
        INIT + "/init.log",
    benchmark:
        INIT + "/init.bench.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "clgrid init --spec {params.spec:q} --scenario {input.scenario} --out {output} > {log} 2>&1"


rule train_task:
    input:
        scenario=SCENARIO,
        data=dataset_files,
        prev=previous_state,
    output:
        state=TASK + "/state.pt",
        acc=TASK + "/eval.json",
    params:
        spec=run_spec,
    threads: 1
    log:
        TASK + "/train.log",
    benchmark:
        TASK + "/train.bench.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    shell:
        "clgrid train --spec {params.spec:q} --scenario {input.scenario} --data {input.data}"
        " --prev {input.prev} --task {wildcards.task} --threads {threads}"
        " --out-state {output.state} --out-eval {output.acc} > {log} 2>&1"
