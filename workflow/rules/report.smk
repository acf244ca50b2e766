# Tables of every run, figures per benchmark x backbone; all declared for `snakemake --report`.


rule tables:
    input:
        all_metrics,
    output:
        runs=table("runs.csv"),
        cells=table("acc_matrix.csv"),
        summary=table("summary.csv"),
        markdown=table_report(table("summary.md"), "summary_table"),
        latex=table("summary.tex"),
        per_seed=table("per_seed.csv"),
        per_seed_markdown=table_report(table("per_seed.md"), "per_seed"),
        comparisons=table("comparisons.csv"),
        comparisons_markdown=table_report(table("comparisons.md"), "comparisons"),
    params:
        stats=lambda wildcards: as_json(config.get("tables", {})),
        out_dir=dir_of("runs"),
    log:
        rule_log("tables"),
    benchmark:
        rule_bench("tables")
    conda:
        ENV
    shell:
        "clgrid tables --metrics {input} --stats {params.stats:q} --out-dir {params.out_dir} > {log} 2>&1"


rule figures:
    input:
        runs=table("runs.csv"),
        cells=table("acc_matrix.csv"),
    output:
        **figure_outputs(FIGURES),
    params:
        out_dir=dir_of("acc_matrix"),
    log:
        rule_log("figures", "{benchmark}/{backbone}"),
    benchmark:
        rule_bench("figures", "{benchmark}/{backbone}")
    conda:
        ENV
    shell:
        "clgrid figures --runs {input.runs} --cells {input.cells} --benchmark {wildcards.benchmark}"
        " --backbone {wildcards.backbone} --out-dir {params.out_dir} > {log} 2>&1"


rule analysis_figures:
    input:
        analyses_of,
    output:
        **figure_outputs(ANALYSIS_FIGURES),
    params:
        methods=" ".join(config["methods"]),
        out_dir=dir_of("rankme"),
    log:
        rule_log("analysis_figures", "{benchmark}/{backbone}"),
    benchmark:
        rule_bench("analysis_figures", "{benchmark}/{backbone}")
    conda:
        ENV
    shell:
        "clgrid analysis-figures --analyses {input} --methods {params.methods}"
        " --out-dir {params.out_dir} > {log} 2>&1"


# `snakemake --cores all paper`: every figure as PDF beside LaTeX/Markdown tables, best value in bold.
rule paper:
    input:
        summary=table("summary.csv"),
        figures=figure_pdfs,
    output:
        latex=table_report(paper_file("tables.tex"), "paper_tables"),
        markdown=table_report(paper_file("tables.md"), "paper_tables"),
    params:
        out_dir=dir_of("latex"),
    log:
        rule_log("paper"),
    benchmark:
        rule_bench("paper")
    conda:
        ENV
    shell:
        "clgrid paper --summary {input.summary} --figures {input.figures} --out-dir {params.out_dir} > {log} 2>&1"


# Final accuracy and forgetting against each swept hyperparameter (configs with sweeps:).
rule sweep_figure:
    input:
        runs=table("runs.csv"),
    output:
        png=figure_report("sweep"),
        pdf=figure_file("sweep", "pdf"),
    params:
        sweeps=lambda wildcards: as_json(cl.sweep_points(config)),
        out_dir=dir_of("png"),
    log:
        rule_log("sweep_figure", "{benchmark}/{backbone}"),
    benchmark:
        rule_bench("sweep_figure", "{benchmark}/{backbone}")
    conda:
        ENV
    shell:
        "clgrid sweep-figure --runs {input.runs} --sweeps {params.sweeps:q} --benchmark {wildcards.benchmark}"
        " --backbone {wildcards.backbone} --out-dir {params.out_dir} > {log} 2>&1"


# Ours beside the published numbers the config reproduces; cells further off than the tolerance are marked.
rule published:
    input:
        summary=table("summary.csv"),
    output:
        csv=published_file("csv"),
        markdown=table_report(published_file("md"), "published"),
        latex=published_file("tex"),
    params:
        published=lambda wildcards: as_json(config["published"]),
        out_dir=dir_of("csv"),
    log:
        rule_log("published"),
    benchmark:
        rule_bench("published")
    conda:
        ENV
    shell:
        "clgrid published --summary {input.summary} --published {params.published:q} --out-dir {params.out_dir}"
        " > {log} 2>&1"


# What each run cost (clgrid.cost): seconds, memory, samples, FLOPs and checkpoint bytes per run and task, read from
# the runs' benchmark files and checkpoints. One job for the grid: it imports torch to count each benchmark x
# backbone x method's FLOPs once, so it is not a local rule.
rule cost_tables:
    input:
        metrics=all_metrics,
        summary=table("summary.csv"),
        selection=selection_cost_inputs,
    output:
        csv=table("cost.csv"),
        markdown=table_report(table("cost.md"), "cost_table"),
    params:
        specs=lambda wildcards: as_json(cost_specs(config, cl.runs(config) + selection_candidate_runs())),
        selection=lambda wildcards: " ".join(os.path.dirname(RUN_METRICS.format(**vars(run)))
                                             for run in selection_candidate_runs()),
        out_dir=dir_of("csv"),
    log:
        rule_log("cost_tables"),
    benchmark:
        rule_bench("cost_tables")
    conda:
        ENV
    shell:
        "clgrid cost-tables --metrics {input.metrics} --specs {params.specs:q} --summary {input.summary}"
        " --selection-runs {params.selection} --out-dir {params.out_dir} > {log} 2>&1"


# Final ACC against training FLOPs and wall seconds, a colour per method.
rule cost_figure:
    input:
        cost=table("cost.csv"),
        runs=table("runs.csv"),
    output:
        png=figure_report(paths.COST_FIGURE),
        pdf=figure_file(paths.COST_FIGURE, "pdf"),
    params:
        out_dir=dir_of("png"),
    log:
        rule_log("cost_figure", "{benchmark}/{backbone}"),
    benchmark:
        rule_bench("cost_figure", "{benchmark}/{backbone}")
    conda:
        ENV
    shell:
        "clgrid cost-figure --cost {input.cost} --runs {input.runs} --benchmark {wildcards.benchmark}"
        " --backbone {wildcards.backbone} --out-dir {params.out_dir} > {log} 2>&1"


# Tracker export (docs/trackers.md): `snakemake --cores 1 export_trackers` mirrors every finished run into the
# trackers the config's export block turns on. One job per run: a run's job needs only its own spec on the command
# line (all of a 500-run study's would pass the kernel's limit on one argument), it starts as soon as the run and its
# cell's figures exist, and rerunning one cell re-exports that cell alone. Never part of the default `all`.
localrules:
    export_run_trackers,
    export_trackers,


rule export_run_trackers:
    input:
        metrics=RUN_METRICS,
        figures=export_figures,
    output:
        paths.TRACKER_RECEIPT,
    params:
        spec=run_spec,
        export=lambda wildcards: as_json(export_options()),
        root=trackers_root,
    log:
        log_beside(paths.TRACKER_RECEIPT, "export"),
    benchmark:
        bench_beside(paths.TRACKER_RECEIPT, "export")
    conda:
        ENV
    shell:
        "clgrid export-trackers --metrics {input.metrics} --spec {params.spec:q} --export {params.export:q}"
        " --figures {input.figures} --root {params.root} --out {output} > {log} 2>&1"


rule export_trackers:
    input:
        tracker_receipts,
