rule tables:
    """Tables 1-4 (Markdown, HTML, LaTeX, CSV) with paired, resolution-aware comparisons; the report's pages
    of the claims, the run configs and provenance."""
    input:
        experiment=EXPERIMENT,
        evals=expand_runs(EVAL_CSV),
        logs=expand_runs(RUN_LOG),
        base=BASE_EVAL_CSV,
        configs=[run_config_path(*c) for c in CONFIGURATIONS],
    output:
        # the report shows HTML inline (Markdown and CSV only as downloads)
        tables=[
            report(f"results/tables/{t}.html", caption=f"../report/{caption(t)}.rst", category="Tables")
            for t in TABLES
        ],
        other=[f"results/tables/{t}.{ext}" for t in TABLES for ext in ("md", "tex", "csv")],
        comparisons="results/tables/comparisons.csv",
        pages=[
            report(f"results/tables/{p}.html", caption=f"../report/{p}.rst", category=c)
            for p, c in (("comparisons", "Tables"), ("configs", "Provenance"), ("provenance", "Provenance"))
        ],
    log:
        "logs/tables.log",
    conda:
        "../envs/egrpo.yaml"
    script:
        "../scripts/tables.py"


rule figures:
    """Figs. 1a, 1b, 4, 5-7 and the tau ablation plot, as PNG and PDF."""
    input:
        **({"variance": VARIANCE_CSV} if EXP.merge_method else {}),
        experiment=EXPERIMENT,
        logs=expand_runs(RUN_LOG),
        qualitative=QUALITATIVE_IMAGES,
        qualitative_prompts=QUALITATIVE_PROMPTS,
        tables=[f"results/tables/{t}.csv" for t in TABLES],
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
    conda:
        "../envs/egrpo.yaml"
    params:
        content=canonical(config),
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
