# Datasets are downloaded once (into data_root, default resources/) and prepared once into the uniform
# form jobs read (results/data/<name>.npz, its sha256 in <name>.json); a benchmark's scenario (its task
# splits) is built once and shared by every run. A dataset imported from an .npz skips the download.


rule download_dataset:
    output:
        RAW_DONE,
    log:
        rule_log("download_dataset", "{dataset}"),
    benchmark:
        rule_bench("download_dataset", "{dataset}")
    params:
        raw_dir=dir_of(0),
    resources:
        runtime=120,
    conda:
        ENV
    shell:
        "clgrid download-dataset --dataset {wildcards.dataset} --raw-dir {params.raw_dir} --marker {output}"
        " > {log} 2>&1"


rule prepare_dataset:
    input:
        unpack(raw_dataset),
    output:
        data=DATASET,
        meta=DATASET_META,
    params:
        spec=dataset_spec,
        raw_dir=raw_dir_arg,
    log:
        rule_log("prepare_dataset", "{dataset}"),
    benchmark:
        rule_bench("prepare_dataset", "{dataset}")
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    shell:
        "clgrid prepare-dataset --spec {params.spec:q} {params.raw_dir} --out {output.data} > {log} 2>&1"


rule prepare_scenario:
    input:
        data=dataset_files,
    output:
        SCENARIO,
    params:
        spec=scenario_spec,
    log:
        rule_log("prepare_scenario", "{benchmark}"),
    benchmark:
        rule_bench("prepare_scenario", "{benchmark}")
    conda:
        ENV
    shell:
        "clgrid prepare-scenario --spec {params.spec:q} --data {input.data} --out {output} > {log} 2>&1"


# Pretrained weights into the cache their loader reads (open_clip / Hugging Face / torch hub), once per backbone,
# before any job of it: compute nodes often have no network, and the jobs run with HF_HUB_OFFLINE=1.
rule download_weights:
    output:
        WEIGHTS_DONE,
    params:
        spec=lambda wildcards: as_json(config["backbones"][wildcards.backbone]),
    log:
        rule_log("download_weights", "{backbone}"),
    conda:
        ENV
    shell:
        "clgrid download-weights --spec {params.spec:q} --out {output} > {log} 2>&1"
