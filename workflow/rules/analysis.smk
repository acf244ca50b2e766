# Representation analyses over every checkpoint of a run: CKA to the first checkpoint per layer,
# layer x layer CKA first vs last, RankMe, linear probe vs the model's head. One job per run, so
# adding a method or a seed to the grid analyses only the new runs.


rule analyze_run:
    input:
        scenario=SCENARIO,
        data=dataset_files,
        states=task_states,
        evals=task_evals,
    output:
        RUN_ANALYSIS,
    params:
        spec=analysis_spec,
    threads: 1
    log:
        "results/runs/{benchmark}/{backbone}/{method}/s{seed}/analysis.log",
    benchmark:
        "results/runs/{benchmark}/{backbone}/{method}/s{seed}/analysis.bench.tsv"
    resources:
        gpu=analysis_resource("gpu"),
        mem_mb=analysis_resource("mem_mb"),
        runtime=analysis_resource("runtime"),
    conda:
        ENV
    shell:
        "clgrid analyze --spec {params.spec:q} --scenario {input.scenario} --data {input.data}"
        " --states {input.states} --evals {input.evals} --out {output} --threads {threads} > {log} 2>&1"
