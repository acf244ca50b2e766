# Tables of every run, figures per benchmark x backbone; all declared for `snakemake --report`.


rule tables:
    input:
        all_metrics,
    output:
        runs=RESULTS + "/tables/runs.csv",
        cells=RESULTS + "/tables/acc_matrix.csv",
        summary=RESULTS + "/tables/summary.csv",
        markdown=report(
            RESULTS + "/tables/summary.md",
            caption="../report/summary_table.rst",
            category="Tables",
        ),
        latex=RESULTS + "/tables/summary.tex",
    params:
        out_dir=RESULTS + "/tables",
    log:
        LOGS + "/tables.log",
    benchmark:
        BENCH + "/tables.tsv"
    conda:
        ENV
    shell:
        "clgrid tables --metrics {input} --out-dir {params.out_dir} > {log} 2>&1"


rule figures:
    input:
        runs=RESULTS + "/tables/runs.csv",
        cells=RESULTS + "/tables/acc_matrix.csv",
    output:
        acc_matrix=report(
            RESULTS + "/figures/{benchmark}/{backbone}/acc_matrix.png",
            caption="../report/acc_matrix.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "accuracy matrix"},
        ),
        acc_curve=report(
            RESULTS + "/figures/{benchmark}/{backbone}/acc_curve.png",
            caption="../report/acc_curve.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "accuracy on seen tasks"},
        ),
        forgetting=report(
            RESULTS + "/figures/{benchmark}/{backbone}/forgetting.png",
            caption="../report/forgetting.rst",
            category="{benchmark}",
            subcategory="{backbone}",
            labels={"benchmark": "{benchmark}", "backbone": "{backbone}", "figure": "forgetting"},
        ),
        pdf=expand(RESULTS + "/figures/{{benchmark}}/{{backbone}}/{figure}.pdf", figure=FIGURES),
    params:
        out_dir=RESULTS + "/figures/{benchmark}/{backbone}",
    log:
        LOGS + "/figures/{benchmark}/{backbone}.log",
    benchmark:
        BENCH + "/figures/{benchmark}/{backbone}.tsv"
    conda:
        ENV
    shell:
        "clgrid figures --runs {input.runs} --cells {input.cells} --benchmark {wildcards.benchmark}"
        " --backbone {wildcards.backbone} --out-dir {params.out_dir} > {log} 2>&1"
