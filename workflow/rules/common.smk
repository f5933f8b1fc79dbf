import hashlib
import json
import os
import re
import sys
from pathlib import Path

# Parsing needs Snakemake's own dependencies only (pydantic, PyYAML): the package is read from this
# checkout (the root Snakefile's folder is on sys.path already; workflow/Snakefile's parent is not),
# and nothing imported here imports torch, so a driver environment without the package plans the DAG.
# Every job imports this checkout's package too (PYTHONPATH, inherited by jobs): a conda environment
# holds the dependencies, and one built by another checkout (a shared --conda-prefix) runs this code.
CHECKOUT = str(Path(workflow.current_basedir).parents[1])
if Path(CHECKOUT, "egrpo", "__init__.py").exists():
    sys.path.insert(0, CHECKOUT)
    # set for the jobs, not read from the user (so not an `envvars:` requirement)
    inherited = os.environ.get("PYTHONPATH", "")
    if inherited.split(os.pathsep)[0] != CHECKOUT:
        os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [CHECKOUT, inherited])))
try:
    from egrpo.cluster import job_threads, limits, resources_of, submission_error
    from egrpo.determinism import intra_op_threads
    from egrpo.errors import ConfigError
    from egrpo.experiment import BASE_EVAL_CSV, EVAL_CSV, MAIN, RUN_DIR, RUN_LOG, Experiment
    from egrpo.schema import check as check_schema
except ImportError as e:
    raise ImportError(
        f"the workflow cannot read its config models ({e}): run it from the egrpo checkout, in an environment "
        "with Snakemake (environment.yml)"
    ) from None

# The whole config is checked here, before any job: every run config resolved, every reward and metric
# in the registry, every input key a job needs present (files are checked when a job starts); then
# against the JSON schema generated from the same model. An error is one line naming the key
# (sys.exit: Snakemake prints the message alone, not the schema and the whole config).
try:
    EXP = Experiment.load(config)
    check_schema(config, Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml")
except ConfigError as e:
    sys.exit(str(e))

WORLD = EXP.world is not None
# `determinism`: the run configs, the evaluation protocol and the world's spec carry it; a job's threads
# are its intra-op threads (a fixed count when set: results change with it)
DETERMINISM = EXP.determinism
JOB_THREADS = intra_op_threads(DETERMINISM) or 1
# a GPU job's threads: the fixed count, else 8 per GPU (what a SLURM job holds: --cpus-per-task)
TRAIN_THREADS = job_threads(intra_op_threads(DETERMINISM), EXP.gpus.train)
EVAL_THREADS = job_threads(intra_op_threads(DETERMINISM), EXP.gpus.eval)
PRETRAIN_THREADS = intra_op_threads(DETERMINISM) or 8  # native: as many as --cores allows, up to 8
SEEDS = [str(s) for s in EXP.seeds]
CONFIGURATIONS = EXP.configurations  # (setting, method, variant), seeds aside
MAIN_FIRST_SEED = [(s, m) for s, m, v in CONFIGURATIONS if v == MAIN]


wildcard_constraints:
    setting="|".join(map(re.escape, EXP.settings)),
    method="|".join(map(re.escape, EXP.methods)),
    variant="|".join(re.escape(v) for v in dict.fromkeys(v for _, _, v in CONFIGURATIONS)),
    seed=r"\d+",
    digest=r"[0-9a-f]{12}",


def canonical(obj):
    """A config as canonical JSON: a param that key order cannot change, so reordering a config file
    reruns nothing."""
    return json.dumps(obj, sort_keys=True, indent=1)


def spec_content(spec):
    """A job's spec (a validated model) as the file it reads: every key resolved, defaults included."""
    return canonical(spec.model_dump(mode="json"))


def content_path(folder, content, suffix=".json"):
    """Where a job's spec is written: `folder/<sha256 of the file>.json`, named by its content. An edit
    is a new file, missing until its rule writes it, so Snakemake reruns exactly the jobs it changes
    from the files alone, without its metadata store (.snakemake/metadata is not copied with results,
    nor kept by a fresh checkout); the rule removes the folder's other files, so going back to an
    earlier config reruns too."""
    return f"{folder}/{hashlib.sha256((content + chr(10)).encode()).hexdigest()[:12]}{suffix}"


RUN_CONFIGS = "results/configs/{setting}/{method}/{variant}"
RUN_META = f"{RUN_DIR}/final/meta.json"
RUN_WEIGHTS = f"{RUN_DIR}/final/trainable.safetensors"
EVAL_SUMMARY = "results/eval/{setting}/{method}/{variant}/seed{seed}.summary.csv"
EVAL_IMAGES = "results/eval/{setting}/{method}/{variant}/seed{seed}_images"
BASE_EVAL_SUMMARY = "results/eval/base.summary.csv"
QUALITATIVE_IMAGES = "results/qualitative/images"
VARIANCE_CSV = "results/figures/variance.csv"
EVAL_PROTOCOL = content_path("results/configs/eval", spec_content(EXP.eval_protocol()))
WORLD_SPEC = content_path("results/configs/world", spec_content(EXP.world)) if WORLD else None
VARIANCE_SPEC = (
    content_path("results/configs/variance", spec_content(EXP.variance_spec())) if EXP.merge_method else None
)
QUALITATIVE_PROMPTS = content_path("results/qualitative/prompts", "\n".join(EXP.qualitative.prompts), ".txt")
# the whole config: the tables and figures read it (a label, a scale, a metric) beside their data
EXPERIMENT = content_path("results/configs/experiment", canonical(config))
TABLES = [f"table1_{s}" for s in EXP.settings] + [axis.stem for _, axis in EXP.tables]
# Figs. 1a-1b show how the first method with E-GRPO's merging merges (no such method, no such figures)
FIGURES = (
    (["fig1b_entropy", "fig1a_variance"] if EXP.merge_method else [])
    + [
        "fig4_reward_curves",
        "fig5_qualitative",
    ]
    + [axis.figure for _, axis in EXP.tables if axis.figure]
)


def dag_made(*paths):
    """The inputs among `paths` that the DAG itself writes (the world's model, prompts and critic);
    external files (FLUX.1-dev, reward weights) are checked by the job, so a dry run plans without them."""
    return [p for p in paths if isinstance(p, str) and p.startswith("results/")]


def model_input():
    return dag_made(EXP.inputs.model)


def prompt_input(split):
    return dag_made(getattr(EXP.inputs.prompts, split))


def model_path(wildcards):
    """The base model directory a job loads (an input of the job when the DAG writes it)."""
    return EXP.inputs.model


def reward_inputs():
    """Reward weight files the DAG writes (the world's critic)."""
    return dag_made(*(v for opts in EXP.inputs.rewards.values() for v in opts.values()))


def world_dir(wildcards, output):
    """Where `egrpo world build` writes (its prompt sets and critic sit side by side)."""
    return str(Path(output.critic).parent)


def expand_runs(pattern, runs=None):
    return [
        pattern.format(setting=r.setting, method=r.method, variant=r.variant, seed=r.seed)
        for r in (runs if runs is not None else EXP.runs)
    ]


# the configuration rules write their `content` param, after removing their folder's other (earlier)
# files: a shell line, since Snakemake spawns each `run:` job as a new Snakemake process that re-parses
# the workflow (~5 s a file on the path to pretraining)
WRITE_CONTENT = (
    'for f in $(dirname {output})/*; do [ "$f" = {output:q} ] || rm -f -- "$f"; done; '
    "printf '%s\\n' {params.content:q} > {output} 2> {log}"
)


def run_config_params(wildcards):
    """A train job's own resolved run config: editing one method or variant reruns only its jobs."""
    return canonical(EXP.run_config_dict(wildcards.setting, wildcards.method, wildcards.variant))


def run_config_path(setting, method, variant):
    """The file of a (setting, method, variant)'s resolved run config (named by its content)."""
    return content_path(
        RUN_CONFIGS.format(setting=setting, method=method, variant=variant),
        canonical(EXP.run_config_dict(setting, method, variant)),
    )


def run_config(wildcards):
    """A train job's run config file."""
    return run_config_path(wildcards.setting, wildcards.method, wildcards.variant)


# group_seeds: one train job per (setting, method, variant) trains every seed in one process
GROUP_SEEDS = EXP.group_seeds
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


def run_out(wildcards):
    return job_path(RUN_DIR, wildcards)


def train_seeds(wildcards):
    return " ".join(SEEDS) if GROUP_SEEDS else wildcards.seed


def train_launcher(wildcards, resources):
    """One process per GPU the job holds (the `gpu` resource: one source for sbatch and torchrun),
    on one node; --standalone picks a free rendezvous port, so jobs sharing a node do not collide."""
    n = int(resources.get("gpu", 0))
    return f"torchrun --standalone --nproc-per-node {n}" if n > 1 else "python"


def run_of(wildcards, input):
    return str(Path(input.final).parent.parent)


EVAL_WITH_TRAINING = EXP.eval.with_training


def eval_in_train(kind):
    """With eval.with_training the train job also evaluates its final model (one process start per
    run instead of two): its extra inputs, outputs and flags."""
    if not EVAL_WITH_TRAINING:
        return {}
    if kind == "input":
        return {"protocol": EVAL_PROTOCOL, "test_prompts": prompt_input("test")}  # reward files: an input already
    return {
        "csv": train_outputs(EVAL_CSV),
        "summary": train_outputs(EVAL_SUMMARY),
        "images": train_outputs(EVAL_IMAGES, directory),
    }


def eval_in_train_flags(wildcards):
    if not EVAL_WITH_TRAINING:
        return ""
    return (
        f"--evaluate {EVAL_PROTOCOL} --eval-out {job_path(EVAL_CSV, wildcards)} "
        f"--eval-images {job_path(EVAL_IMAGES, wildcards)}"
    )


def qualitative_runs(wildcards):
    return " ".join(
        f"--run {s}/{m}={RUN_DIR.format(setting=s, method=m, variant=MAIN, seed=SEEDS[0])}" for s, m in MAIN_FIRST_SEED
    )


def caption(table):
    """Caption file of a table (Table 1 has one per reward setting, one caption for all)."""
    return "table1" if table.startswith("table1_") else table


def final_outputs():
    """The default target: the tables and figures, every result they cite (each run's export, log and
    evaluation, the base model's evaluation, the qualitative images, Fig. 1a's data) and every spec
    file the jobs read. Snakemake does not remake a missing file whose consumers are newer than the
    files they still have (it treats it as an intermediate, like a deleted temp file): as targets of
    their own, a deleted run's outputs are made again, and an edited config's new spec files are
    written, and every job reading them reruns after, down to the tables."""
    runs = [RUN_META, RUN_WEIGHTS, RUN_LOG, EVAL_CSV, EVAL_SUMMARY, EVAL_IMAGES]
    specs = [EXPERIMENT, EVAL_PROTOCOL, QUALITATIVE_PROMPTS] + [p for p in (WORLD_SPEC, VARIANCE_SPEC) if p]
    specs += [run_config_path(*c) for c in CONFIGURATIONS]
    return (
        [f"results/tables/{t}.md" for t in TABLES]
        + [f"results/figures/{f}.png" for f in FIGURES]
        + [path for pattern in runs for path in expand_runs(pattern)]
        + [BASE_EVAL_CSV, BASE_EVAL_SUMMARY, QUALITATIVE_IMAGES]
        + ([VARIANCE_CSV] if EXP.merge_method else [])
        + specs
    )


def check_submission():
    """Mistakes in the cluster resources (a placeholder account, a CPU job sent to a GPU partition),
    caught before any job is submitted: one line naming what to change. Called once every rule exists."""
    gpus = {
        r.name: int(getattr(r.resources["gpu"], "raw", r.resources["gpu"]) or 0) if "gpu" in r.resources else 0
        for r in workflow.rules
    }
    # the rules a cluster would submit (workflow.is_local says True for all until an executor is chosen)
    remote = [r.name for r in workflow.rules if r.name not in workflow._localrules and not r.norun]
    error = submission_error(*resources_of(workflow.resource_settings), gpus, remote)
    if error:
        sys.exit(error)
