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
        log_beside(RUN_ANALYSIS, "analysis"),
    benchmark:
        bench_beside(RUN_ANALYSIS, "analysis")
    resources:
        **job_resources(analysis_resource),
    conda:
        ENV
    shell:
        "clgrid analyze --spec {params.spec:q} --scenario {input.scenario} --data {input.data}"
        " --states {input.states} --evals {input.evals} --out {output} --threads {threads} > {log} 2>&1"


# Cross-run CKA: two runs of one benchmark, backbone and seed (e.g. partly vs fully frozen), checkpoint against
# checkpoint after every task. Pairs: analysis.cross_run_pairs, by default each run and its frozen counterpart.
rule compare_runs:
    input:
        scenario=SCENARIO,
        data=dataset_files,
        states=task_states,
        other=other_states,
    output:
        RUN_COMPARISON,
    params:
        spec=analysis_spec,
        other=other_spec,
    threads: 1
    log:
        log_beside(RUN_COMPARISON, "cka"),
    benchmark:
        bench_beside(RUN_COMPARISON, "cka")
    resources:
        **job_resources(analysis_resource),
    conda:
        ENV
    shell:
        "clgrid compare-runs --spec {params.spec:q} --other-spec {params.other:q} --scenario {input.scenario}"
        " --data {input.data} --states {input.states} --other-states {input.other} --out {output}"
        " --threads {threads} > {log} 2>&1"
