# Tables of every run, figures per benchmark x backbone; all declared for `snakemake --report`.


rule tables:
    input:
        all_metrics,
    output:
        runs="results/tables/runs.csv",
        cells="results/tables/acc_matrix.csv",
        summary="results/tables/summary.csv",
        markdown=report(
            "results/tables/summary.md",
            caption="../report/summary_table.rst",
            category="Tables",
        ),
        latex="results/tables/summary.tex",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.runs),
    log:
        "results/logs/tables.log",
    benchmark:
        "results/benchmarks/tables.tsv"
    conda:
        ENV
    shell:
        "clgrid tables --metrics {input} --out-dir {params.out_dir} > {log} 2>&1"


rule figures:
    input:
        runs="results/tables/runs.csv",
        cells="results/tables/acc_matrix.csv",
    output:
        acc_matrix=report(
            "results/figures/{benchmark}/{backbone}/acc_matrix.png",
            caption="../report/acc_matrix.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "accuracy matrix"},
        ),
        acc_curve=report(
            "results/figures/{benchmark}/{backbone}/acc_curve.png",
            caption="../report/acc_curve.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "accuracy on seen tasks"},
        ),
        forgetting=report(
            "results/figures/{benchmark}/{backbone}/forgetting.png",
            caption="../report/forgetting.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "forgetting"},
        ),
        summary=report(
            "results/figures/{benchmark}/{backbone}/summary.png",
            caption="../report/summary.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "summary"},
        ),
        pdf=expand("results/figures/{{benchmark}}/{{backbone}}/{figure}.pdf", figure=FIGURES),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.acc_matrix),
    log:
        "results/logs/figures/{benchmark}/{backbone}.log",
    benchmark:
        "results/benchmarks/figures/{benchmark}/{backbone}.tsv"
    conda:
        ENV
    shell:
        "clgrid figures --runs {input.runs} --cells {input.cells} --benchmark {wildcards.benchmark}"
        " --backbone {wildcards.backbone} --out-dir {params.out_dir} > {log} 2>&1"


rule analysis_figures:
    input:
        analyses_of,
    output:
        cka_curves=report(
            "results/figures/{benchmark}/{backbone}/cka_curves.png",
            caption="../report/cka_curves.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "CKA vs task"},
        ),
        cka_layers=report(
            "results/figures/{benchmark}/{backbone}/cka_layers.png",
            caption="../report/cka_layers.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "CKA layer x layer"},
        ),
        rankme=report(
            "results/figures/{benchmark}/{backbone}/rankme.png",
            caption="../report/rankme.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "RankMe"},
        ),
        probe=report(
            "results/figures/{benchmark}/{backbone}/probe_vs_head.png",
            caption="../report/probe_vs_head.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "probe vs head"},
        ),
        pdf=expand("results/figures/{{benchmark}}/{{backbone}}/{figure}.pdf", figure=ANALYSIS_FIGURES),
    params:
        methods=" ".join(config["methods"]),
        out_dir=lambda wildcards, output: os.path.dirname(output.rankme),
    log:
        "results/logs/analysis_figures/{benchmark}/{backbone}.log",
    benchmark:
        "results/benchmarks/analysis_figures/{benchmark}/{backbone}.tsv"
    conda:
        ENV
    shell:
        "clgrid analysis-figures --analyses {input} --methods {params.methods}"
        " --out-dir {params.out_dir} > {log} 2>&1"


# `snakemake --cores all paper`: every figure as PDF beside LaTeX/Markdown tables, best value in bold.
rule paper:
    input:
        summary="results/tables/summary.csv",
        figures=figure_pdfs,
    output:
        latex=report("results/paper/tables.tex", caption="../report/paper_tables.rst", category="Tables"),
        markdown=report("results/paper/tables.md", caption="../report/paper_tables.rst", category="Tables"),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.latex),
    log:
        "results/logs/paper.log",
    benchmark:
        "results/benchmarks/paper.tsv"
    conda:
        ENV
    shell:
        "clgrid paper --summary {input.summary} --figures {input.figures} --out-dir {params.out_dir} > {log} 2>&1"


# Final accuracy and forgetting against each swept hyperparameter (configs with sweeps:).
rule sweep_figure:
    input:
        runs="results/tables/runs.csv",
    output:
        png=report(
            "results/figures/{benchmark}/{backbone}/sweep.png",
            caption="../report/sweep.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "sweep"},
        ),
        pdf="results/figures/{benchmark}/{backbone}/sweep.pdf",
    params:
        sweeps=lambda wildcards: as_json(cl.sweep_points(config)),
        out_dir=lambda wildcards, output: os.path.dirname(output.png),
    log:
        "results/logs/sweep_figure/{benchmark}/{backbone}.log",
    benchmark:
        "results/benchmarks/sweep_figure/{benchmark}/{backbone}.tsv"
    conda:
        ENV
    shell:
        "clgrid sweep-figure --runs {input.runs} --sweeps {params.sweeps:q} --benchmark {wildcards.benchmark}"
        " --backbone {wildcards.backbone} --out-dir {params.out_dir} > {log} 2>&1"


# Ours beside the published numbers the config reproduces; cells further off than the tolerance are marked.
rule published:
    input:
        summary="results/tables/summary.csv",
    output:
        csv="results/tables/published.csv",
        markdown=report("results/tables/published.md", caption="../report/published.rst", category="Tables"),
        latex="results/tables/published.tex",
    params:
        published=lambda wildcards: as_json(config["published"]),
        out_dir=lambda wildcards, output: os.path.dirname(output.csv),
    log:
        "results/logs/published.log",
    benchmark:
        "results/benchmarks/published.tsv"
    conda:
        ENV
    shell:
        "clgrid published --summary {input.summary} --published {params.published:q} --out-dir {params.out_dir}"
        " > {log} 2>&1"
