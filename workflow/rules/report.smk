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
