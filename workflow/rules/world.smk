# The embedded default world (config/config.yaml only): prompt sets, fidelity critic, base model.
if WORLD:

    localrules:
        world_config,

    rule world_config:
        """The world's settings as the file `egrpo world build` and `egrpo world pretrain` read."""
        output:
            WORLD_SPEC,
        log:
            "logs/configs/world.log",
        conda:
            "../envs/egrpo.yaml"
        params:
            content=spec_content(EXP.world_spec()),
        shell:
            WRITE_CONTENT

    rule world_build:
        input:
            spec=WORLD_SPEC,
        output:
            train=directory(EXP.inputs.prompts.train),
            test=directory(EXP.inputs.prompts.test),
            critic=EXP.inputs.rewards["world_fidelity"]["critic"],
        log:
            "logs/world_build.log",
        benchmark:
            "logs/benchmarks/world_build.tsv"
        priority: 10  # first: the pretraining that follows needs every core, and all else waits on both
        conda:
            "../envs/egrpo.yaml"
        threads: JOB_THREADS
        resources:
            **limits("world_build", 0),
        params:
            out=world_dir,
        shell:
            "python -m egrpo world build --config {input.spec} --out {params.out} > {log} 2>&1"

    rule world_pretrain:
        input:
            spec=WORLD_SPEC,
        output:
            directory(EXP.inputs.model),
        log:
            "logs/world_pretrain.log",
        benchmark:
            "logs/benchmarks/world_pretrain.tsv"
        conda:
            "../envs/egrpo.yaml"
        threads: PRETRAIN_THREADS  # Snakemake caps it at --cores
        resources:
            **limits("world_pretrain", 0),
        shell:
            "python -m egrpo world pretrain --config {input.spec} --out {output} > {log} 2>&1"
