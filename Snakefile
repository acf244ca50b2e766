# clgrid: a continual-learning study as one DAG.
#   snakemake --cores all                      # the embedded default (offline, CPU, minutes)
#   snakemake --cores all --configfile config/experiments/X.yaml [config/data/shared.yaml]
#   snakemake --profile profiles/local
from snakemake.utils import min_version

min_version("8.20")


# The embedded default applies only when no --configfile is given: an experiment config is a whole study,
# not additions to the default grid (Snakemake would otherwise merge the two).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/helpers.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/overview.smk"
include: "workflow/rules/preview.smk"


# Cheap aggregation, tables and figures run on the submitting machine, never as cluster jobs; so do downloads and
# scenario splits (compute nodes often have no internet, and a split is milliseconds of work).
localrules:
    all,
    download_dataset,
    download_weights,
    prepare_scenario,
    run_metrics,
    tables,
    figures,
    analysis_figures,
    paper,
    sweep_figure,
    selection_report,
    published,
    cost_figure,
    preview,


rule all:
    input:
        final_outputs(),
    default_target: True
