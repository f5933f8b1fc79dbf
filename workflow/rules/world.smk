# The embedded default world (config/config.yaml only): prompt sets, fidelity critic, base model.
if WORLD:

    rule world_build:
        output:
            train=directory(config["inputs"]["prompts"]["train"]),
            test=directory(config["inputs"]["prompts"]["test"]),
            critic=config["inputs"]["rewards"]["world_fidelity"]["critic"],
        log:
            "logs/world_build.log",
        benchmark:
            "logs/benchmarks/world_build.tsv"
        threads: 1
        priority: 10  # first: the pretraining that follows needs every core, and all else waits on both
        conda:
            "../envs/egrpo.yaml"
        params:
            out=world_dir,
            seed=config["world"].get("seed", 0),
            steps=config["world"].get("critic_steps", 300),
        shell:
            "python -m egrpo world build --out {params.out} --seed {params.seed} "
            "--critic-steps {params.steps} > {log} 2>&1"

    rule world_pretrain:
        output:
            directory(config["inputs"]["model"]),
        log:
            "logs/world_pretrain.log",
        benchmark:
            "logs/benchmarks/world_pretrain.tsv"
        threads: 8  # Snakemake caps it at --cores
        conda:
            "../envs/egrpo.yaml"
        params:
            vae=config["world"]["pretrain"]["vae_steps"],
            flow=config["world"]["pretrain"]["flow_steps"],
            images=config["world"]["pretrain"]["images"],
            seed=config["world"].get("seed", 0),
        shell:
            "python -m egrpo world pretrain --out {output} --vae-steps {params.vae} --flow-steps {params.flow} "
            "--images {params.images} --seed {params.seed} > {log} 2>&1"
