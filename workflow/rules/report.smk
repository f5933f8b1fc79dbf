rule tables:
    """Tables 1-4 (Markdown, LaTeX, CSV) with paired, resolution-aware comparisons."""
    input:
        experiment=EXPERIMENT,
        evals=expand_runs(EVAL_CSV),
        logs=expand_runs(RUN_LOG),
        base=BASE_EVAL_CSV,
    output:
        tables=[report(f"results/tables/{t}.md", caption=f"../report/{caption(t)}.rst", category="Tables")
                for t in TABLES],
        other=[f"results/tables/{t}.{ext}" for t in TABLES for ext in ("tex", "csv")],
        comparisons="results/tables/comparisons.csv",
    log:
        "logs/tables.log",
    conda:
        "../envs/egrpo.yaml"
    script:
        "../scripts/tables.py"


rule figures:
    """Figs. 1a, 1b, 4, 5-7 and the tau ablation plot, as PNG and PDF."""
    input:
        experiment=EXPERIMENT,
        logs=expand_runs(RUN_LOG),
        qualitative=QUALITATIVE_IMAGES,
        qualitative_prompts=QUALITATIVE_PROMPTS,
        tables=[f"results/tables/{t}.csv" for t in TABLES],
        **({"variance": VARIANCE_CSV} if EXP.merge_method else {}),
    output:
        figures=[report(f"results/figures/{f}.png", caption=f"../report/{f}.rst", category="Figures") for f in FIGURES],
        pdf=[f"results/figures/{f}.pdf" for f in FIGURES],
    log:
        "logs/figures.log",
    conda:
        "../envs/egrpo.yaml"
    script:
        "../scripts/figures.py"


rule experiment_config:
    """The whole config, named by its content: an input of the tables and figures, which read their
    labels, scales and metrics from it."""
    output:
        EXPERIMENT,
    log:
        "logs/configs/experiment.log",
    params:
        content=canonical(config),
    conda:
        "../envs/egrpo.yaml"
    shell:
        WRITE_CONTENT


localrules:
    all,
    experiment_config,
    run_config,
    eval_config,
    qualitative_prompts,
    tables,
    figures,
