# Datasets are prepared once; a benchmark's task splits (its scenario) once, shared by every run.


rule prepare_dataset:
    output:
        DATASET,
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_dataset/{dataset}.tsv"
    conda:
        ENV
    shell:
        "clgrid prepare-dataset --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule prepare_scenario:
    input:
        data=dataset_files,
    output:
        SCENARIO,
    params:
        spec=scenario_spec,
    log:
        "results/logs/prepare_scenario/{benchmark}.log",
    benchmark:
        "results/benchmarks/prepare_scenario/{benchmark}.tsv"
    conda:
        ENV
    shell:
        "clgrid prepare-scenario --spec {params.spec:q} --data {input.data} --out {output} > {log} 2>&1"
