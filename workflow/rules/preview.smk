# The cost preview (clgrid.preview): `snakemake preview` writes results/preview.md from the config files this run
# was given (not a part of `all`; -f rewrites it after the config changed).
rule preview:
    output:
        "results/preview.md",
    params:
        configfiles=configfile_args,
        overrides=config_overrides,
        local="" if workflow.non_local_exec else "--local",
        schema=SCHEMA,
    log:
        rule_log("preview"),
    conda:
        ENV
    shell:
        "clgrid preview --configfile {params.configfiles} --overrides {params.overrides:q} --schema {params.schema}"
        " {params.local} --out {output} > {log} 2>&1"
