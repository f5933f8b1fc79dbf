if not EVAL_WITH_TRAINING:  # else the train job writes these outputs itself

    rule evaluate_run:
        input:
            final=RUN_META,
            protocol=EVAL_PROTOCOL,
            prompts=prompt_inputs("test"),
            metrics=metric_inputs(),
        output:
            csv=EVAL_CSV,
            summary=EVAL_SUMMARY,
            images=directory(EVAL_IMAGES),
        log:
            "logs/eval/{setting}/{method}/{variant}/seed{seed}.log",
        benchmark:
            "benchmarks/eval/{setting}/{method}/{variant}/seed{seed}.tsv"
        threads: 1
        resources:
            gpu=GPUS["eval"],
        conda:
            "../envs/egrpo.yaml"
        params:
            run=run_of,
        shell:
            "python -m egrpo evaluate --run {params.run} --protocol {input.protocol} "
            "--images {output.images} --out {output.csv} > {log} 2>&1"


rule evaluate_base:
    input:
        model=model_inputs(),
        protocol=EVAL_PROTOCOL,
        prompts=prompt_inputs("test"),
        metrics=metric_inputs(),
    output:
        csv="results/eval/base.csv",
        summary="results/eval/base.summary.csv",
        images=directory("results/eval/base_images"),
    log:
        "logs/eval/base.log",
    benchmark:
        "benchmarks/eval/base.tsv"
    threads: 1
    priority: 1  # short: run it beside the training jobs, not after the last one
    resources:
        gpu=GPUS["eval"],
    conda:
        "../envs/egrpo.yaml"
    params:
        model=model_dir,
    shell:
        "python -m egrpo evaluate --model {params.model} --protocol {input.protocol} "
        "--images {output.images} --out {output.csv} > {log} 2>&1"


rule qualitative_prompts:
    output:
        "results/qualitative/prompts.txt",
    log:
        "logs/qualitative_prompts.log",
    params:
        prompts=config.get("qualitative", {}).get("prompts", []),
    run:
        Path(output[0]).write_text("".join(f"{p}\n" for p in params.prompts))


rule qualitative_images:
    """The qualitative prompts with each method's first-seed model (and the base), same seeds."""
    input:
        prompts="results/qualitative/prompts.txt",
        protocol=EVAL_PROTOCOL,
        model=model_inputs(),
        runs=expand_runs(RUN_META, MAIN_FIRST_SEED),
    output:
        directory("results/qualitative/images"),
    log:
        "logs/qualitative_images.log",
    benchmark:
        "benchmarks/qualitative_images.tsv"
    threads: 1
    priority: 1  # short: run it beside the training jobs, not after the last one
    resources:
        gpu=GPUS["eval"],
    conda:
        "../envs/egrpo.yaml"
    params:
        model=model_dir,
        runs=" ".join(f"--run {s}/{m}=results/runs/{s}/{m}/main/seed{seed}" for s, m, _, seed in MAIN_FIRST_SEED),
    shell:
        "python -m egrpo render --model {params.model} {params.runs} --prompts {input.prompts} "
        "--protocol {input.protocol} --out {output} > {log} 2>&1"


rule variance:
    """Fig. 1a's quantity: reward spread of one SDE step per timestep, unmerged and merged."""
    input:
        model=model_inputs(),
        prompts=prompt_inputs("test"),
        metrics=metric_inputs(),
    output:
        "results/figures/variance.csv",
    log:
        "logs/variance.log",
    benchmark:
        "benchmarks/variance.tsv"
    threads: 1
    priority: 1  # short: run it beside the training jobs, not after the last one
    resources:
        gpu=GPUS["eval"],
    conda:
        "../envs/egrpo.yaml"
    params:
        model=model_dir,
        prompts=test_prompts,
        metric=json.dumps(next(iter(config["metrics"].values()))),
        v={"limit": 8, "group_size": 16, "steps": 16, "tau": 2.2, **config.get("variance", {})},
        hw=f"--height {config['eval']['sampler'].get('height', 1024)} --width {config['eval']['sampler'].get('width', 1024)}",
        msl=config["eval"].get("max_sequence_length", 512),
    shell:
        "python -m egrpo variance --model {params.model} --prompts {params.prompts} --metric '{params.metric}' "
        "--limit {params.v[limit]} --group-size {params.v[group_size]} --steps {params.v[steps]} "
        "--tau {params.v[tau]} {params.hw} --max-sequence-length {params.msl} --out {output} > {log} 2>&1"
