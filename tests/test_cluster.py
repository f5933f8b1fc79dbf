"""egrpo.cluster: the submission checks on plain resource dicts, and the per-attempt limits."""

from egrpo.cluster import CPUS_PER_GPU, job_threads, limits, submission_error

GPU_RULES = {"train": 8, "evaluate_base": 1}
REMOTE = ["world_build", "train", "evaluate_base"]


def test_the_placeholder_account_is_named_quoted_or_not():
    for value in ("your_account", "'your_account'", '"your_account"'):
        error = submission_error({"slurm_account": value}, {}, GPU_RULES, REMOTE)
        assert error and error.startswith("slurm_account is still the placeholder") and "\n" not in error
    assert submission_error({}, {"train": {"slurm_account": "your_account"}}, GPU_RULES, REMOTE)
    assert submission_error({"slurm_account": "lab42"}, {}, GPU_RULES, REMOTE) is None


def test_a_cpu_job_on_the_gpu_rules_partition_is_named():
    """The former profile: every job on the default partition `gpu`, where the GPU rules go too."""
    default = {"slurm_account": "lab42", "slurm_partition": "gpu"}
    overwrite = {"train": {"gpu_model": "h100"}, "evaluate_base": {"gpu_model": "h100"}}
    error = submission_error(default, overwrite, GPU_RULES, REMOTE)
    assert error.startswith("rule world_build holds no GPU") and "partition 'gpu'" in error
    # a CPU partition of its own for the world, or no GPU rule there at all: nothing to say
    assert submission_error(default, {**overwrite, "world_build": {"slurm_partition": "cpu"}}, GPU_RULES, REMOTE) is None
    assert submission_error({"slurm_account": "lab42"}, {"train": {"slurm_partition": "gpu", "gpu_model": "h100"}},
                            GPU_RULES, REMOTE) is None
    # the GPU rules of a CPU-only config
    error = submission_error({}, overwrite, {}, ["train"])
    assert error.startswith("rule train holds no GPU") and "gpu_model h100" in error


def test_limits_scale_with_the_attempt_but_a_training_nodes_memory():
    train, evaluate, world = limits("train", 8), limits("evaluate_run", 1), limits("world_pretrain", 0)
    assert [train["runtime"](None, a) for a in (1, 2, 3)] == [2880, 5760, 8640]
    assert train["mem_mb"](None, 1) == train["mem_mb"](None, 3) == 512_000
    assert evaluate["mem_mb"](None, 2) == 2 * evaluate["mem_mb"](None, 1)
    assert world["mem_mb"](None, 2) == 2 * world["mem_mb"](None, 1)
    assert limits("train", 0)["mem_mb"](None, 2) == 2 * limits("train", 0)["mem_mb"](None, 1)


def test_threads_are_the_fixed_count_or_per_gpu():
    assert job_threads(1, 8) == 1 and job_threads(None, 0) == 1 and job_threads(None, 2) == 2 * CPUS_PER_GPU
