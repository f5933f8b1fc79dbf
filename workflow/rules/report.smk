rule tables:
    """Tables 1-4 (Markdown, LaTeX, CSV): mean and 95% CI over seeds, compute per method."""
    input:
        evals=expand_runs(EVAL_CSV),
        logs=expand_runs(RUN_LOG),
        base="results/eval/base.csv",
    output:
        [f"results/tables/table1_{s}.{ext}" for s in config["settings"] for ext in ("md", "tex", "csv")],
        [f"results/tables/{t}.{ext}" for t in ("table2_merge", "table3_steps", "table4_tau") for ext in ("md", "tex", "csv")],
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
        [f"results/figures/{f}.{ext}" for f in ("fig1b_entropy", "fig1a_variance", "fig4_reward_curves",
                                                 "fig5_qualitative", "tau_ablation") for ext in ("png", "pdf")],
    log:
        "logs/figures.log",
    conda:
        "../envs/egrpo.yaml"
    params:
        runs=RUNS,
        training=config["training"],
    script:
        "../scripts/figures.py"
