rule eval_config:
    """The evaluation protocol as a file for `egrpo evaluate --protocol` (re-runs when it changes)."""
    output:
        EVAL_PROTOCOL,
    log:
        "logs/configs/eval.log",
    conda:
        "../envs/egrpo.yaml"
    params:
        content=spec_content(EXP.eval_protocol()),
    shell:
        WRITE_CONTENT


if not EVAL_WITH_TRAINING:  # else the train job writes these outputs itself

    rule evaluate_run:
        input:
            final=RUN_META,
            protocol=EVAL_PROTOCOL,
            prompts=prompt_input("test"),
            rewards=reward_inputs(),
        output:
            csv=EVAL_CSV,
            summary=EVAL_SUMMARY,
            images=directory(EVAL_IMAGES),
        log:
            "logs/eval/{setting}/{method}/{variant}/seed{seed}.log",
        benchmark:
            "logs/benchmarks/eval/{setting}/{method}/{variant}/seed{seed}.tsv"
        conda:
            "../envs/egrpo.yaml"
        threads: EVAL_THREADS
        resources:
            **limits("evaluate_run", EXP.gpus.eval),
            gpu=EXP.gpus.eval,
        params:
            run=run_of,
        shell:
            "python -m egrpo evaluate --run {params.run} --protocol {input.protocol} --device auto "
            "--images {output.images} --out {output.csv} > {log} 2>&1"


rule evaluate_base:
    input:
        model=model_input(),
        protocol=EVAL_PROTOCOL,
        prompts=prompt_input("test"),
        rewards=reward_inputs(),
    output:
        csv=BASE_EVAL_CSV,
        summary=BASE_EVAL_SUMMARY,
        images=directory("results/eval/base_images"),
    log:
        "logs/eval/base.log",
    benchmark:
        "logs/benchmarks/eval/base.tsv"
    priority: 1  # short: run it beside the training jobs, not after the last one
    conda:
        "../envs/egrpo.yaml"
    threads: EVAL_THREADS
    resources:
        **limits("evaluate_base", EXP.gpus.eval),
        gpu=EXP.gpus.eval,
    params:
        model=model_path,
    shell:
        "python -m egrpo evaluate --model {params.model} --protocol {input.protocol} --device auto "
        "--images {output.images} --out {output.csv} > {log} 2>&1"


rule qualitative_prompts:
    output:
        QUALITATIVE_PROMPTS,
    log:
        "logs/qualitative_prompts.log",
    conda:
        "../envs/egrpo.yaml"
    params:
        content="\n".join(EXP.qualitative.prompts),
    shell:
        WRITE_CONTENT


rule qualitative_images:
    """The qualitative prompts with each method's first-seed model (and the base), same seeds."""
    input:
        prompts=QUALITATIVE_PROMPTS,
        protocol=EVAL_PROTOCOL,
        model=model_input(),
        runs=expand_runs(RUN_META, [r for r in EXP.runs if r.variant == MAIN and str(r.seed) == SEEDS[0]]),
    output:
        directory(QUALITATIVE_IMAGES),
    log:
        "logs/qualitative_images.log",
    benchmark:
        "logs/benchmarks/qualitative_images.tsv"
    priority: 1  # short: run it beside the training jobs, not after the last one
    conda:
        "../envs/egrpo.yaml"
    threads: EVAL_THREADS
    resources:
        **limits("qualitative_images", EXP.gpus.eval),
        gpu=EXP.gpus.eval,
    params:
        model=model_path,
        runs=qualitative_runs,
    shell:
        "python -m egrpo render --model {params.model} {params.runs} --prompts {input.prompts} "
        "--protocol {input.protocol} --device auto --out {output} > {log} 2>&1"


if EXP.merge_method:  # Fig. 1a (its figure is planned only then)

    localrules:
        variance_config,

    rule variance_config:
        """Fig. 1a's spec: the main run config of the method with E-GRPO's merge rule, prompts, metric, budget."""
        output:
            VARIANCE_SPEC,
        log:
            "logs/configs/variance.log",
        conda:
            "../envs/egrpo.yaml"
        params:
            content=spec_content(EXP.variance_spec()),
        shell:
            WRITE_CONTENT

    rule variance:
        """Fig. 1a's quantity: reward spread of one SDE step per timestep, unmerged and merged, under the
        main E-GRPO run's schedule, noise, merge rule and resolution."""
        input:
            spec=VARIANCE_SPEC,
            model=model_input(),
            prompts=prompt_input("test"),
            rewards=reward_inputs(),
        output:
            VARIANCE_CSV,
        log:
            "logs/variance.log",
        benchmark:
            "logs/benchmarks/variance.tsv"
        priority: 1  # short: run it beside the training jobs, not after the last one
        conda:
            "../envs/egrpo.yaml"
        threads: EVAL_THREADS
        resources:
            **limits("variance", EXP.gpus.eval),
            gpu=EXP.gpus.eval,
        shell:
            "python -m egrpo variance --config {input.spec} --device auto --out {output} > {log} 2>&1"
