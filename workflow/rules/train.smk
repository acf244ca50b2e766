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
        log_beside(INIT_MODEL, "init"),
    benchmark:
        bench_beside(INIT_MODEL, "init")
    resources:
        **job_resources(init_resource),
    conda:
        ENV
    shell:
        "clgrid init --spec {params.spec:q} --scenario {input.scenario} --out {output} > {log} 2>&1"


# A backbone with init_from: its initial model is another run's task state (clgrid.config.init_source), loaded
# with the head kept, re-initialised or replaced. That run's state is an input, so the DAG trains the first stage
# first; its config hash is in this spec, so changing the first stage reruns everything after it.
ruleorder: init_model_from_run > init_model


rule init_model_from_run:
    input:
        unpack(pretrained_weights),
        scenario=SCENARIO,
        source=init_source_state,
    output:
        INIT_MODEL,
    params:
        spec=init_spec,
    log:
        log_beside(INIT_MODEL, "init"),
    benchmark:
        bench_beside(INIT_MODEL, "init")
    resources:
        **job_resources(init_resource),
    wildcard_constraints:
        backbone=one_of(BACKBONES_FROM_RUNS),
    conda:
        ENV
    shell:
        "clgrid init --spec {params.spec:q} --scenario {input.scenario} --source {input.source} --out {output}"
        " > {log} 2>&1"


# Evaluation after the task runs in the same process (it always follows training, and a
# second job would pay the torch import again for milliseconds of work).
#
# How many tasks one job trains is the benchmark's tasks_per_job (clgrid.resources.task_chunks): benchmarks with
# one task per job use train_task; the others get one rule per group of tasks (train_<benchmark>_tasks<first>to
# <last>), whose job trains those tasks in one process and writes the same per-task files, byte for byte.
TRAIN_CHUNKS = {bench: cl_resources.task_chunks(config, bench, workflow.non_local_exec) for bench in config["benchmarks"]}
PER_TASK_BENCHMARKS = [bench for bench, chunks in TRAIN_CHUNKS.items() if all(a == b for a, b in chunks)]


rule train_task:
    input:
        unpack(cached_features),
        unpack(selection_inputs),
        scenario=SCENARIO,
        data=run_dataset_files,
        prev=previous_state,
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
        benchmark=one_of(PER_TASK_BENCHMARKS),
    conda:
        ENV
    shell:
        "clgrid train --spec {params.spec:q} --scenario {input.scenario} --data {input.data} --prev {input.prev}"
        " --task {wildcards.task} --threads {threads} --placement {params.placement}"
        " --checkpoint-every {params.checkpoint} {params.features} --out-state {output.state} --out-eval {output.acc}"
        " > {log} 2>&1"


TRAIN_RULES = ["train_task"]  # every rule that trains a run's tasks (the selection rules take precedence over them)
for _bench, _chunks in TRAIN_CHUNKS.items():
    for _first, _last in _chunks:
        if _bench in PER_TASK_BENCHMARKS:
            continue
        _tasks = list(range(_first, _last + 1))
        TRAIN_RULES.append(f"train_{_bench}_tasks{_first}to{_last}")

        rule:
            name:
                TRAIN_RULES[-1]
            input:
                unpack(cached_features),
                unpack(selection_inputs),
                scenario=SCENARIO,
                data=run_dataset_files,
                prev=chunk_previous_state(_first),
            output:
                states=task_files(TASK_STATE, _tasks),
                evals=task_files(TASK_EVAL, _tasks),
            params:
                **train_params(_tasks),
            threads: 1
            log:
                **chunk_logs(_tasks),
            benchmark:
                bench_beside(RUN_METRICS, f"train_tasks{_first}to{_last}")
            resources:
                **job_resources(train_resource, len(_tasks)),
            wildcard_constraints:
                benchmark=one_of([_bench]),
            conda:
                ENV
            shell:
                "clgrid train --spec {params.spec:q} --scenario {input.scenario} --data {input.data} --prev {input.prev}"
                " --task {params.tasks} --threads {threads} --placement {params.placement}"
                " --checkpoint-every {params.checkpoint} {params.features} --out-state {output.states}"
                " --out-eval {output.evals} --task-logs {log.tasks} > {log.job} 2>&1"
