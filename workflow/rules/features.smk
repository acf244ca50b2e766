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
        "results/features/{benchmark}/{backbone}/s{seed}/features.log",
    benchmark:
        "results/features/{benchmark}/{backbone}/s{seed}/features.bench.tsv"
    resources:
        gpu=init_resource("gpu"),
        mem_mb=init_resource("mem_mb"),
        runtime=init_resource("runtime"),
    conda:
        ENV
    shell:
        "clgrid extract-features --spec {params.spec:q} --scenario {input.scenario} --data {input.data}"
        " --init {input.init} --threads {threads} --out {output} > {log} 2>&1"
