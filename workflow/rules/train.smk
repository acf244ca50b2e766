# One job per (run, task): the state after task t-1 becomes the state after task t.


rule init_model:
    input:
        unpack(pretrained_weights),
        scenario=SCENARIO,
    output:
        INIT_MODEL,
    params:
        spec=init_spec,
    log:
        "results/init/{benchmark}/{backbone}/s{seed}/init.log",
    benchmark:
        "results/init/{benchmark}/{backbone}/s{seed}/init.bench.tsv"
    resources:
        gpu=init_resource("gpu"),
        mem_mb=init_resource("mem_mb"),
        runtime=init_resource("runtime"),
    conda:
        ENV
    shell:
        "clgrid init --spec {params.spec:q} --scenario {input.scenario} --out {output} > {log} 2>&1"


# Evaluation after the task runs in the same process (it always follows training, and a
# second job would pay the torch import again for milliseconds of work).
rule train_task:
    input:
        unpack(cached_features),
        scenario=SCENARIO,
        data=run_dataset_files,
        prev=previous_state,
    output:
        state=TASK_STATE,
        acc=TASK_EVAL,
    params:
        spec=run_spec,
        placement=config["data_placement"],
        checkpoint=config["checkpoint_every_s"],
        features=features_arg,
    threads: 1
    log:
        "results/runs/{benchmark}/{backbone}/{method}/s{seed}/task{task}/train.log",
    benchmark:
        "results/runs/{benchmark}/{backbone}/{method}/s{seed}/task{task}/train.bench.tsv"
    resources:
        gpu=train_resource("gpu"),
        mem_mb=train_resource("mem_mb"),
        runtime=train_resource("runtime"),
    conda:
        ENV
    shell:
        "clgrid train --spec {params.spec:q} --scenario {input.scenario} --data {input.data}"
        " --prev {input.prev} --task {wildcards.task} --threads {threads} --placement {params.placement}"
        " --checkpoint-every {params.checkpoint} {params.features}"
        " --out-state {output.state} --out-eval {output.acc} > {log} 2>&1"
