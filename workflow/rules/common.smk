import json
import sys
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

# rules run `python -m egrpo` from this checkout, installed or not
shell.prefix(f"export PYTHONPATH='{workflow.basedir}':$PYTHONPATH; ")
sys.path.insert(0, workflow.basedir)

from egrpo.config import ConfigError, resolve  # noqa: E402

WORLD = "world" in config
GPUS = {"train": 1, "eval": 1, **config.get("gpus", {})}
SEEDS = [str(s) for s in config["seeds"]]
ABL = config["ablations"]
if ABL["setting"] not in config["settings"]:
    raise ValueError(f"config error: ablations.setting: {ABL['setting']!r} is not one of settings {list(config['settings'])}")


def variant_overrides(variant):
    """--set overrides of an E-GRPO ablation variant (main = the config as written)."""
    if variant == "main":
        return []
    if variant.startswith("tau"):
        return [f"method.tau={variant[3:]}"]
    if variant.startswith("fixed"):
        return [f"method.fixed_merge={variant[5:]}"]
    return [f"method.active={variant[len('active_'):]}"]


def setting_overrides(setting):
    s = config["settings"][setting]
    out = [f"rewards.names={json.dumps(s['names'])}"]
    if "weights" in s:
        out.append(f"rewards.weights={json.dumps(s['weights'])}")
    if "aggregation" in s:
        out.append(f"rewards.aggregation={s['aggregation']}")
    return out


VARIANTS = (
    [f"tau{t:g}" for t in ABL.get("tau", [])]
    + [f"fixed{l}" for l in ABL.get("fixed_merge", [])]
    + [f"active_{a}" for a in ABL.get("active", []) if a != "first8"]
)
RUNS = [(s, m, "main", seed) for s in config["settings"] for m in config["methods"] for seed in SEEDS] + [
    (ABL["setting"], "egrpo", v, seed) for v in VARIANTS for seed in SEEDS
]

# a config error is reported here, before any job starts, naming the key
for _s, _m, _v, _seed in {(s, m, v, SEEDS[0]) for s, m, v, _ in RUNS}:
    try:
        resolve(config["training"], _m, int(_seed), setting_overrides(_s) + variant_overrides(_v))
    except ConfigError as e:
        raise ValueError(f"training.{str(e).removeprefix('config error: ')} (method {_m}, setting {_s}, variant {_v})") from None


localrules:
    all,
    run_config,
    eval_config,
    qualitative_prompts,


wildcard_constraints:
    setting="|".join(config["settings"]),
    method="egrpo|dancegrpo|mixgrpo|mixgrpo_flash|flowgrpo",
    variant="|".join(["main", *VARIANTS]),
    seed=r"\d+",


RUN_DIR = "results/runs/{setting}/{method}/{variant}/seed{seed}"
RUN_META = RUN_DIR + "/final/meta.json"
RUN_WEIGHTS = RUN_DIR + "/final/trainable.safetensors"
RUN_LOG = RUN_DIR + "/final/log.jsonl"
EVAL_CSV = "results/eval/{setting}/{method}/{variant}/seed{seed}.csv"
EVAL_SUMMARY = "results/eval/{setting}/{method}/{variant}/seed{seed}.summary.csv"
EVAL_IMAGES = "results/eval/{setting}/{method}/{variant}/seed{seed}_images"


def model_inputs():
    """The base model directory when the DAG builds it (default world); nothing for FLUX.1-dev."""
    return [config["model_path"]] if WORLD else []


def prompt_inputs(split):
    return [config["prompts"][split]] if WORLD else []


def metric_inputs():
    """Files the metrics read that the DAG itself writes (the world's critic)."""
    paths = [v for m in config["metrics"].values() for v in m.get("options", {}).values() if isinstance(v, str)]
    return [p for p in paths if p.startswith("results/")] if WORLD else []


def expand_runs(pattern, runs=None):
    return [pattern.format(setting=s, method=m, variant=v, seed=seed) for s, m, v, seed in (runs or RUNS)]


# group_seeds: one train job per (setting, method, variant) trains every seed in one process
GROUP_SEEDS = config.get("group_seeds", False)
TRAIN_JOB = "{setting}/{method}/{variant}/" + ("seeds" if GROUP_SEEDS else "seed{seed}")


def train_outputs(pattern, flag=lambda path: path):
    """A train job's outputs of a run pattern: its own seed's, or every seed's when it trains them all;
    `flag` (e.g. directory) marks each."""
    if GROUP_SEEDS:
        return [flag(p) for p in expand(pattern, seed=SEEDS, allow_missing=True)]
    return flag(pattern)


def job_path(pattern, wildcards):
    """A run pattern filled from a train job's wildcards; `{seed}` is left for `egrpo train` to fill
    when the job trains every seed."""
    return pattern.format(**{"seed": "{seed}", **dict(wildcards.items())})


def train_seeds(wildcards):
    return " ".join(SEEDS) if GROUP_SEEDS else wildcards.seed


def run_of(wildcards, input):
    return str(Path(input.final).parent.parent)


def model_dir(wildcards, input):
    return input.model[0] if WORLD else config["model_path"]


def test_prompts(wildcards, input):
    return input.prompts[0] if WORLD else config["prompts"]["test"]


def train_launcher():
    n = GPUS["train"]
    return f"torchrun --nproc-per-node {n}" if n > 1 else "python"


def train_overrides(wildcards):
    sets = [f"model.path={config['model_path']}", f"train.prompts={config['prompts']['train']}"]
    sets += setting_overrides(wildcards.setting) + variant_overrides(wildcards.variant)
    return " ".join(f"--set '{o}'" for o in sets)


EVAL_WITH_TRAINING = config["eval"].get("with_training", False)
EVAL_PROTOCOL = "results/configs/eval.json"


def eval_protocol():
    """What `egrpo evaluate --protocol` reads: test prompts, metrics, sampler, text length."""
    e = config["eval"]
    return {
        "prompts": config["prompts"]["test"],
        "limit": config["prompts"].get("test_limit"),
        "metrics": config["metrics"],
        "sampler": e["sampler"],
        "max_sequence_length": e.get("max_sequence_length", 512),
    }


def eval_in_train(kind):
    """With eval.with_training the train job also evaluates its final model (one process start per
    run instead of two): its extra inputs, outputs and flags."""
    if not EVAL_WITH_TRAINING:
        return {}
    if kind == "input":
        return {"protocol": EVAL_PROTOCOL, "test_prompts": prompt_inputs("test"), "metrics": metric_inputs()}
    return {"csv": train_outputs(EVAL_CSV), "summary": train_outputs(EVAL_SUMMARY),
            "images": train_outputs(EVAL_IMAGES, directory)}


def eval_in_train_flags(wildcards):
    if not EVAL_WITH_TRAINING:
        return ""
    return (f"--evaluate {EVAL_PROTOCOL} --eval-out {job_path(EVAL_CSV, wildcards)} "
            f"--eval-images {job_path(EVAL_IMAGES, wildcards)}")


TABLES = [f"table1_{s}" for s in config["settings"]] + ["table2_merge", "table3_steps", "table4_tau"]
FIGURES = ["fig1b_entropy", "fig1a_variance", "fig4_reward_curves", "fig5_qualitative", "tau_ablation"]
MAIN_FIRST_SEED = [r for r in RUNS if r[2] == "main" and r[3] == SEEDS[0]]


def final_outputs():
    return [f"results/tables/{t}.md" for t in TABLES] + [f"results/figures/{f}.png" for f in FIGURES]
