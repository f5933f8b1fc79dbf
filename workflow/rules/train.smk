rule run_config:
    """The `training` block of the config as a file for `egrpo train` (re-runs when it changes)."""
    output:
        "results/configs/training.yaml",
    log:
        "logs/run_config.log",
    params:
        training=config["training"],
    run:
        import yaml

        Path(output[0]).write_text(yaml.safe_dump(dict(params.training), sort_keys=False))


rule eval_config:
    """The evaluation protocol as a file for `egrpo evaluate --protocol` (re-runs when it changes)."""
    output:
        EVAL_PROTOCOL,
    log:
        "logs/eval_config.log",
    params:
        protocol=eval_protocol(),
    run:
        Path(output[0]).write_text(json.dumps(params.protocol, indent=2))


rule train:
    """One training run, or with group_seeds every seed of one (setting, method, variant) in turn.
    Checkpoints live in each run's checkpoints/ folder, outside the declared outputs, so a killed or
    preempted job resumes from its last checkpoint when Snakemake starts it again. With
    eval.with_training it also evaluates the final model (the evaluate_run rule's outputs)."""
    input:
        config="results/configs/training.yaml",
        model=model_inputs(),
        prompts=prompt_inputs("train"),
        **eval_in_train("input"),
    output:
        final=train_outputs(RUN_META),
        weights=train_outputs(RUN_WEIGHTS),
        log=train_outputs(RUN_LOG),
        **eval_in_train("output"),
    log:
        f"logs/train/{TRAIN_JOB}.log",
    benchmark:
        f"benchmarks/train/{TRAIN_JOB}.tsv"
    threads: 1
    resources:
        gpu=GPUS["train"],
    conda:
        "../envs/egrpo.yaml"
    params:
        out=lambda wildcards: job_path(RUN_DIR, wildcards),
        seeds=train_seeds,
        launcher=train_launcher(),
        sets=train_overrides,
        evaluate=eval_in_train_flags,
    shell:
        "{params.launcher} -m egrpo train --config {input.config} --method {wildcards.method} "
        "--seed {params.seeds} --out {params.out} {params.sets} {params.evaluate} --no-progress > {log} 2>&1"
