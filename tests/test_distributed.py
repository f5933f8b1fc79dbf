"""Multi-process training on CPU processes (torchrun, gloo): the same run as one process, exports that
hold the trained weights, sharded gradients under FSDP2, resume at another world size, failure agreed
by every rank; and the CUDA set-up order, with CUDA calls mocked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import tiny_run_config

# Tolerances: rewards and grad norms agree to float32 reduction-order noise (~1e-5 relative here);
# the PPO loss is itself ~1e-6 (advantages have zero group mean at ratio 1), so it is compared absolutely.
REL, LOSS_ABS = 1e-3, 1e-4
WORKER = Path(__file__).with_name("dist_worker.py")


def _launch(nproc, *args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] \
        if nproc > 1 else [sys.executable]
    r = subprocess.run(launcher + list(args), env=env, capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r


def _train(cfg_path, out, nproc, *extra):
    _launch(nproc, "-m", "egrpo", "train", "--config", str(cfg_path), "--out", str(out), "--no-progress", *extra)
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _worker_rows(out: Path) -> list[dict]:
    """The rows dist_worker.py wrote, one file per rank."""
    return [json.loads(p.read_text()) for p in sorted(out.glob("worker_rank*.json"))]


def _config(tmp_path, tiny_flux_dir, method="egrpo", **sections):
    cfg = tiny_run_config(tiny_flux_dir, method, **sections)
    cfg["method"]["name"] = method
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_and_export_the_trained_weights(tiny_flux_dir, tmp_path, parallel):
    """E-GRPO's release schedule (4 AdamW steps an iteration here) over 2 ranks equals 1 process; the
    export holds the trained weights (DDP once exported an empty file) and equals the 1-process one."""
    # a small learning rate: with the clip binding on later steps, reduction-order noise would otherwise grow
    cfg = _config(tmp_path, tiny_flux_dir, train={"iterations": 3, "checkpoint_every": 10}, optim={"lr": 1e-3})
    one = _train(cfg, tmp_path / "one", 1)
    two = _train(cfg, tmp_path / "two", 2, "--set", f"train.parallel={parallel}")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert a["updates"] == b["updates"] == 4
        assert a["reward/brightness/mean"] == pytest.approx(b["reward/brightness/mean"], rel=REL)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=REL)
        assert abs(a["loss"] - b["loss"]) < LOSS_ABS
        assert a["trained_pairs"] == b["trained_pairs"] and a["passes/sampling"] == b["passes/sampling"]
    assert one[2]["reward/brightness/mean"] != one[0]["reward/brightness/mean"]  # the model did change
    w1, w2 = (load_file(str(tmp_path / run / "final" / "trainable.safetensors")) for run in ("one", "two"))
    assert len(w2) > 0 and w1.keys() == w2.keys()
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4


def test_fsdp_gradients_stay_sharded_between_backward_passes(tiny_flux_dir, tmp_path):
    cfg = _config(tmp_path, tiny_flux_dir, train={"parallel": "fsdp"})
    _launch(2, str(WORKER), "sharded_grads", str(cfg), str(tmp_path / "o"))
    rows = _worker_rows(tmp_path / "o")
    assert len(rows) == 2
    for row in rows:
        # no full-size gradient is ever held; each rank keeps half of every gradient
        assert row["full_grads"] == 0 and row["sharded"] and row["local"] < 0.6 * row["global"]


def test_sampling_gathers_the_model_once_per_iteration(tiny_flux_dir, tmp_path):
    """Under FSDP2 the sampling phase all-gathers each sharded module once per iteration when the plan
    has room (it has, here), instead of once per forward; the samples and the update are the same."""
    cfg = _config(tmp_path, tiny_flux_dir, method="dancegrpo", train={"parallel": "fsdp"})
    _launch(2, str(WORKER), "gathers", str(cfg), str(tmp_path / "o"))
    rows = _worker_rows(tmp_path / "o")
    assert len(rows) == 2
    for row in rows:
        kept, per_forward, counts = row["rows"]["True"], row["rows"]["False"], row["counts"]
        assert kept["planned"]  # the memory plan chose to keep the model gathered
        modules, forwards = kept["fsdp_modules"], kept["sampling_forwards"]
        assert forwards >= 8 and modules == 4  # the tiny model: root + 1 double + 2 single blocks
        assert counts["sampling True"] == modules  # once per module for all of the iteration's sampling
        # per forward: every block each forward (the root keeps its own parameters between forwards)
        assert counts["sampling False"] == (modules - 1) * forwards + 1
        assert counts["training True"] == counts["training False"]  # training is left as it was
        assert kept["reward"] == per_forward["reward"] and kept["loss"] == per_forward["loss"]


def test_resume_at_another_world_size(tiny_flux_dir, tmp_path):
    """A sharded checkpoint of a 2-rank FSDP run resumes in one process (DCP reshards)."""
    cfg = _config(tmp_path, tiny_flux_dir, train={"iterations": 2, "checkpoint_every": 1, "parallel": "fsdp"})
    _train(cfg, tmp_path / "run", 2)
    shards = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "last").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # each rank wrote its own shard
    log = _train(cfg, tmp_path / "run", 1, "--set", "train.iterations=4")
    assert [r["iteration"] for r in log] == [0, 1, 2, 3]
    out = (tmp_path / "run" / "log.jsonl").read_text()
    assert out.count('"iteration": 1,') == 1


def test_a_failure_on_one_rank_stops_every_rank_with_the_same_error(tiny_flux_dir, tmp_path):
    cfg = _config(tmp_path, tiny_flux_dir, method="dancegrpo", rewards={"names": ["nan_on_rank_one"]})
    r = _launch(2, str(WORKER), "nan", str(cfg), str(tmp_path / "o"), check=False)
    rows = _worker_rows(tmp_path / "o")
    assert len(rows) == 2, r.stderr[-2000:]  # both ranks returned (no rank left waiting in a collective)
    assert rows[0]["result"] == rows[1]["result"] and "non-finite values" in rows[0]["result"]
    assert "(rank 1)" in rows[0]["result"]


def test_a_rank_failing_alone_exits_without_the_group_teardown(tiny_flux_dir, tmp_path):
    """An unexpected error on one rank (CUDA OOM, a bug) ends that process at once: NCCL's teardown
    can block while the peers sit in a collective (simulated: destroy_process_group never returns),
    which would hold the job until the group's timeout. torchrun then stops the other rank."""
    import time

    cfg = _config(tmp_path, tiny_flux_dir, method="dancegrpo", rewards={"names": ["boom_on_rank_one"]},
                  train={"parallel": "fsdp"})
    t0 = time.perf_counter()
    r = _launch(2, str(WORKER), "teardown", str(cfg), str(tmp_path / "o"), check=False)
    assert r.returncode != 0 and "RuntimeError: boom on rank 1" in r.stdout + r.stderr
    assert time.perf_counter() - t0 < 300  # not the group's 60-minute timeout


def test_cuda_setup_order_and_this_ranks_gpu(monkeypatch):
    """set_device(LOCAL_RANK) before the process group, which is bound to that device; a bare `cuda`
    is this rank's GPU. (No GPU here: the CUDA calls are recorded, not run.)"""
    from egrpo import distributed as dist

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", str(d))))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, device_id=None, timeout=None:
                        calls.append(("init", backend, str(device_id), timeout)))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 3)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 8)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    device = dist.local_device("cuda")
    assert device == torch.device("cuda", 3) and dist.local_device("auto") == torch.device("cuda", 3)
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"  # before CUDA allocates
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: not not calls[1:])
    dist.init_from_env(device)
    # an explicit timeout: the mixed group would otherwise take gloo's default
    assert calls == [("set_device", "cuda:3"), ("init", "cpu:gloo,cuda:nccl", "cuda:3", dist.PG_TIMEOUT)]
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    dist.local_device("cuda")
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"  # a user's own setting wins


def test_a_gpu_job_that_cannot_see_cuda_fails_instead_of_running_on_the_cpu(monkeypatch):
    from egrpo import distributed as dist
    from egrpo.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    assert dist.local_device("auto") == torch.device("cpu")  # a CPU job stays a CPU job
    monkeypatch.setenv("SLURM_JOB_GPUS", "0,1")
    with pytest.raises(DeviceError, match=r"SLURM_JOB_GPUS=0,1.*torch .*CUDA"):
        dist.local_device("auto")
    monkeypatch.delenv("SLURM_JOB_GPUS")
    with pytest.raises(DeviceError, match="model.device asks for cuda"):
        dist.local_device("cuda")


def test_fsdp_computes_in_bf16_from_fp32_shards_and_reduces_in_fp32(tmp_path):
    """The mixed-precision policy FSDP2 gets on a GPU (bf16 params, fp32 gradient reduction), checked on
    a process group of one (gloo)."""
    import torch.distributed as tdist

    from egrpo import distributed as dist
    from egrpo.tiny_flux import TinyFluxSpec, build_tiny_flux

    tdist.init_process_group("gloo", rank=0, world_size=1, store=tdist.FileStore(str(tmp_path / "store"), 1))
    try:
        model = build_tiny_flux(TinyFluxSpec()).transformer.float()
        wrapped = dist.wrap(model, "fsdp", torch.device("cpu"), param_dtype=torch.bfloat16)
        for module in (wrapped, wrapped.transformer_blocks[0], wrapped.single_transformer_blocks[0]):
            policy = module._get_fsdp_state()._mp_policy
            assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32
        assert all(p.dtype == torch.float32 for p in wrapped.parameters())  # master shards stay fp32
    finally:
        tdist.destroy_process_group()
