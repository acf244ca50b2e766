# The study at a glance, on demand (neither is in `rule all`):
#   snakemake --cores 1 progress      results/tables/progress.md: the grid's state now (clgrid.progress), in --report
#   snakemake --cores 1 tidy_table    results/tables/all_runs.{csv,parquet}: every run's config and metrics, a row each
from clgrid.plots.tables.tidy import tidy_runs, tidy_specs  # noqa: E402


localrules:
    progress,
    tidy_table,


# A snapshot of the results folder and .snakemake/ when it runs: no inputs, so `snakemake progress` (or
# --forcerun progress) redraws it; `clgrid progress` shows the same live.
rule progress:
    output:
        markdown=table_report(table(paths.PROGRESS_TABLE), "progress"),
    params:
        configfiles=configfile_args,
        overrides=config_overrides,
    log:
        rule_log("progress"),
    benchmark:
        rule_bench("progress")
    conda:
        ENV
    shell:
        "clgrid progress --configfile {params.configfiles} --overrides {params.overrides:q} --directory ."
        " --markdown {output.markdown} > {log} 2>&1"


rule tidy_table:
    input:
        lambda wildcards: [RUN_METRICS.format(**vars(run)) for run in tidy_runs(config)],
    output:
        csv=table(paths.TIDY_TABLES[0]),
        parquet=table(paths.TIDY_TABLES[1]),
    params:
        specs=lambda wildcards: as_json(tidy_specs(config, tidy_runs(config))),
    log:
        rule_log("tidy_table"),
    benchmark:
        rule_bench("tidy_table")
    conda:
        ENV
    shell:
        "clgrid tidy-table --metrics {input} --specs {params.specs:q} --out-csv {output.csv}"
        " --out-parquet {output.parquet} > {log} 2>&1"
