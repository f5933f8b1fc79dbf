rule tables:
    """Tables 1-4 (Markdown, LaTeX, CSV): mean and 95% CI over seeds, compute per method."""
    input:
        evals=expand_runs(EVAL_CSV),
        logs=expand_runs(RUN_LOG),
        base="results/eval/base.csv",
    output:
        [report(f"results/tables/{t}.md", caption="../report/table.rst", category="Tables") for t in TABLES],
        [f"results/tables/{t}.{ext}" for t in TABLES for ext in ("tex", "csv")],
    log:
        "logs/tables.log",
    conda:
        "../envs/egrpo.yaml"
    params:
        runs=RUNS,
        variants=VARIANTS,
    script:
        "../scripts/tables.py"


rule figures:
    """Figs. 1a, 1b, 4, 5-7 and the tau ablation plot, as PNG and PDF."""
    input:
        variance="results/figures/variance.csv",
        logs=expand_runs(RUN_LOG),
        qualitative="results/qualitative/images",
        qualitative_prompts="results/qualitative/prompts.txt",
        tau="results/tables/table4_tau.csv",
    output:
        [report(f"results/figures/{f}.png", caption="../report/figure.rst", category="Figures") for f in FIGURES],
        [f"results/figures/{f}.pdf" for f in FIGURES],
    log:
        "logs/figures.log",
    conda:
        "../envs/egrpo.yaml"
    params:
        runs=RUNS,
        training=config["training"],
    script:
        "../scripts/figures.py"
