# A frozen backbone's features, computed once per (benchmark, backbone, feature seed) and read by every
# frozen-backbone run (every method, and every seed when the weights are pretrained): clgrid.models.feature_cache.


rule extract_features:
    input:
        scenario=SCENARIO,
        data=dataset_files,
        init=INIT_MODEL,
    output:
        FEATURES,
    params:
        spec=init_spec,
    threads: 1
    log:
        log_beside(FEATURES, "features"),
    benchmark:
        bench_beside(FEATURES, "features")
    resources:
        **job_resources(init_resource),
    conda:
        ENV
    shell:
        "clgrid extract-features --spec {params.spec:q} --scenario {input.scenario} --data {input.data}"
        " --init {input.init} --threads {threads} --out {output} > {log} 2>&1"
