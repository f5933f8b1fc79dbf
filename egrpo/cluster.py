"""Cluster submission, checked when the workflow is parsed: mistakes in the SLURM resources that would
otherwise surface only as failed jobs (one line naming what to change), and each rule's own memory and
time, scaled by the attempt so that a retry after an out-of-memory or time-limit kill asks for more."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

PLACEHOLDER_ACCOUNT = "your_account"
SLURM_PROFILE = "profiles/slurm/config.yaml"
CPUS_PER_GPU = 8  # CPU threads a GPU job holds per GPU (data loading, decoding, reward preprocessing)

# A first attempt's memory (MB) and time (minutes) per rule, for configs whose jobs run on GPUs (the
# paper's setup) and for the CPU-only embedded world. Attempt k asks for k times as much, except a
# training job's memory on GPUs: it asks for its node's memory on every attempt (its retries are for time
# limits and preemption, which resume from the last checkpoint).
LIMITS = {
    "gpu": {"train": (512_000, 2880), "evaluate_run": (96_000, 240), "evaluate_base": (96_000, 240),
            "qualitative_images": (96_000, 120), "variance": (96_000, 120)},
    "cpu": {"train": (8_000, 240), "evaluate_run": (4_000, 60), "evaluate_base": (4_000, 60),
            "qualitative_images": (4_000, 60), "variance": (4_000, 60), "world_build": (4_000, 60),
            "world_pretrain": (8_000, 240)},
}
FIXED_MEMORY = {"train"}


def limits(rule: str, gpus: int) -> dict[str, Callable]:
    """`resources:` of a rule: mem_mb and runtime functions of the attempt."""
    mem, minutes = LIMITS["gpu" if gpus else "cpu"][rule]
    scale_mem = not (gpus and rule in FIXED_MEMORY)
    return {"mem_mb": lambda wildcards, attempt: mem * (attempt if scale_mem else 1),
            "runtime": lambda wildcards, attempt: minutes * attempt}


def job_threads(fixed: int | None, gpus: int) -> int:
    """A job's CPU threads: the determinism setting's fixed intra-op count when it sets one (results
    depend on it), else CPUS_PER_GPU per GPU the job holds (one for a CPU job)."""
    return fixed or (CPUS_PER_GPU * gpus if gpus else 1)


def _plain(value) -> str:
    return str(value).strip().strip("'\"")


def submission_error(default: Mapping[str, object], overwrite: Mapping[str, Mapping[str, object]],
                     gpus: Mapping[str, int], remote_rules: Iterable[str]) -> str | None:
    """The first mistake in the resources a cluster job would be submitted with, as one line, or None.

    default: the default resources (name -> value); overwrite: the per-rule resources (rule -> name ->
    value), both as given on the command line or in a profile; gpus: the GPUs each rule's job holds under
    this config; remote_rules: the rules whose jobs are submitted (not local rules)."""
    accounts = [default.get("slurm_account")] + [res.get("slurm_account") for res in overwrite.values()]
    if any(a is not None and _plain(a) == PLACEHOLDER_ACCOUNT for a in accounts):
        return (f"slurm_account is still the placeholder '{PLACEHOLDER_ACCOUNT}' ({SLURM_PROFILE}): set your "
                "SLURM account there, or delete the line to submit under your default account")
    # the partitions the GPU rules go to (their own, or the default one)
    gpu_partitions = {_plain(res.get("slurm_partition", default.get("slurm_partition")))
                      for res in overwrite.values() if "gpu_model" in res} - {"None"}
    for rule in remote_rules:
        if gpus.get(rule, 0):
            continue
        res = overwrite.get(rule, {})
        partition = res.get("slurm_partition", default.get("slurm_partition"))
        if "gpu_model" in res or (partition is not None and _plain(partition) in gpu_partitions):
            where = f"partition '{_plain(partition)}'" if partition is not None else f"gpu_model {_plain(res['gpu_model'])}"
            return (f"rule {rule} holds no GPU under this config but the SLURM resources send it to {where} "
                    f"({SLURM_PROFILE}): run this config without the SLURM profile, or give {rule} a CPU "
                    "partition (set-resources)")
    return None


def resources_of(settings) -> tuple[dict, dict]:
    """(default, per-rule) resources as given to Snakemake, from its ResourceSettings: raw values."""
    default = {}
    for arg in (settings.default_resources.args if settings.default_resources else []) or []:
        name, _, value = arg.partition("=")
        default[name] = value
    overwrite = {rule: {name: getattr(r, "raw", r) for name, r in res.items()}
                 for rule, res in (settings.overwrite_resources or {}).items()}
    return default, overwrite
