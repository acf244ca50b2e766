# The cost preview (clgrid.preview): `snakemake preview` writes results/preview.md from the config files this run
# was given (not a part of `all`; -f rewrites it after the config changed).
rule preview:
    output:
        "results/preview.md",
    params:
        files=" ".join(os.path.abspath(f) for f in (workflow.overwrite_configfiles or ["config/config.yaml"])),
        local="" if workflow.non_local_exec else "--local",
        schema=SCHEMA,
    log:
        rule_log("preview"),
    conda:
        ENV
    shell:
        "clgrid preview --configfile {params.files} --schema {params.schema} {params.local} --out {output} > {log} 2>&1"
