rule run_config:
    """A train job's resolved run config, named by its content: its own input, so an edit reruns exactly
    the jobs it changes."""
    output:
        f"{RUN_CONFIGS}/{{digest}}.json",
    log:
        "logs/configs/{setting}/{method}/{variant}/{digest}.log",
    conda:
        "../envs/egrpo.yaml"
    params:
        content=run_config_params,
    shell:
        WRITE_CONTENT


rule train:
    """One training run, or with group_seeds every seed of one (setting, method, variant) in turn.
    Checkpoints live in each run's checkpoints/ folder, outside the declared outputs, so a killed or
    preempted job resumes from its last checkpoint when Snakemake starts it again; a checkpoint of an
    edited config is discarded, never reused. With eval.with_training it also evaluates the final
    model (the evaluate_run rule's outputs)."""
    input:
        **eval_in_train("input"),
        config=run_config,
        model=model_input(),
        prompts=prompt_input("train"),
        rewards=reward_inputs(),
    output:
        **eval_in_train("output"),
        final=train_outputs(RUN_META),
        weights=train_outputs(RUN_WEIGHTS),
        log=train_outputs(RUN_LOG),
    log:
        f"logs/train/{TRAIN_JOB}.log",
    benchmark:
        f"logs/benchmarks/train/{TRAIN_JOB}.tsv"
    conda:
        "../envs/egrpo.yaml"
    threads: TRAIN_THREADS
    resources:
        **limits("train", EXP.gpus.train),
        gpu=EXP.gpus.train,
    params:
        out=run_out,
        seeds=train_seeds,
        launcher=train_launcher,
        evaluate=eval_in_train_flags,
    shell:
        "{params.launcher} -m egrpo train --config {input.config} --seed {params.seeds} --out {params.out} "
        "{params.evaluate} --on-config-change restart > {log} 2>&1"
