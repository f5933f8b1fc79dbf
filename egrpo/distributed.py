"""Thin helpers over torch.distributed for torchrun: this rank's device, the process group, reductions,
agreement on failure, and DDP/FSDP2 wrapping.

The order follows PyTorch's FSDP2 example: pick and set this rank's GPU before anything touches CUDA,
join the process group bound to it, then shard. Single-process runs need no process group; every
helper degrades to the identity.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import DeviceError

# How long a rank waits in a collective before the job fails. Explicit (the mixed gloo+NCCL group would
# otherwise take gloo's 30 min): the longest legitimate wait is every rank writing its checkpoint shard
# (17.9 GB a rank at FLUX.1-dev size) to a slow shared filesystem while the others wait at the barrier.
PG_TIMEOUT = timedelta(minutes=60)
# CUDA allocator setting (PyTorch's documented option, torchtitan's default): memory is mapped in
# growable segments, so blocks freed by one phase's shapes (24-row sampling, 1-12-row training, VAE
# decodes, per-tensor weight loading) serve the next instead of fragmenting. A user's own setting wins.
CUDA_ALLOC_CONF = "expandable_segments:True"


def _gpus_given() -> str | None:
    """The environment variable that says this job holds GPUs, if any (a SLURM GPU job, or a launcher
    that set CUDA_VISIBLE_DEVICES)."""
    none = {"SLURM_JOB_GPUS": ("",), "SLURM_GPUS_ON_NODE": ("", "0"), "CUDA_VISIBLE_DEVICES": ("", "-1", "NoDevFiles")}
    for var, empty in none.items():
        value = os.environ.get(var, "").strip()
        if value not in empty:
            return f"{var}={value}"
    return None


def _no_cuda(why: str) -> DeviceError:
    driver = "unknown (nvidia-smi not found)"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else \
                f"unknown (nvidia-smi: {out.stderr.strip()[:120]})"
        except (OSError, subprocess.SubprocessError) as e:
            driver = f"unknown ({e})"
    return DeviceError(f"{why}, but torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no usable GPU; "
                       f"NVIDIA driver {driver}. Install a torch build for this driver, or run on the CPU with "
                       "model.device: cpu")


def local_device(requested: str = "auto") -> torch.device:
    """This rank's device. 'auto' is cuda:LOCAL_RANK when CUDA is available and the CPU otherwise, but
    a job that was given GPUs and cannot use them fails instead of running on the CPU; a bare 'cuda'
    is this rank's GPU (LOCAL_RANK), never GPU 0 for every rank."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if requested == "auto" or requested.startswith("cuda"):
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", CUDA_ALLOC_CONF)  # read when CUDA first allocates
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local)
        given = _gpus_given()
        if given:
            raise _no_cuda(f"this job was given GPUs ({given})")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise _no_cuda(f"model.device asks for {requested}")
        if device.index is None:
            device = torch.device("cuda", local)
    return device


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes (one process under torchrun is a group of one, so
    FSDP2 shards it as it would 8); (rank, world). On CUDA this rank's GPU is set first and bound to
    the group (device_id), and NCCL carries GPU tensors while gloo carries the CPU ones (the
    iteration's counters and rewards are reduced on the CPU)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before anything else touches CUDA: FSDP2 shards onto current_device()
    if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("cpu:gloo,cuda:nccl", device_id=device, timeout=PG_TIMEOUT)
        else:
            dist.init_process_group("gloo", timeout=PG_TIMEOUT)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def destroy() -> None:
    """Leave the process group at a clean exit (every rank reaches this point together)."""
    if is_distributed():
        dist.destroy_process_group()


def hard_exit(code: int) -> None:
    """End a failing rank of a process group now, skipping the group's teardown: destroying a NCCL
    group while peers sit in a collective can block until the timeout, so a rank that failed alone
    would hold the job for an hour. torchrun sees the exit and stops the other ranks."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce a tensor over ranks (returns a new tensor; identity without a process group)."""
    t = t.clone()
    if is_distributed():
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor over ranks (ranks may hold equal lengths only)."""
    if not is_distributed():
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


def all_gather_dict(d: dict) -> dict:
    """Union of small picklable dicts over ranks."""
    if not is_distributed():
        return dict(d)
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, d)
    return {k: v for part in parts for k, v in part.items()}


def raise_together(message: str | None, error: type[Exception]) -> None:
    """Agree on failure: when any rank reports a message, every rank raises `error` with the first one,
    instead of one rank raising while the others wait in a collective."""
    messages = [message]
    if is_distributed():
        messages = [None] * dist.get_world_size()
        dist.all_gather_object(messages, message)
    bad = [(r, m) for r, m in enumerate(messages) if m is not None]
    if bad:
        rank, msg = bad[0]
        raise error(msg if len(messages) == 1 else f"{msg} (rank {rank})")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return module.module if isinstance(module, DDP) else module


def wrap(module: torch.nn.Module, parallel: str, device: torch.device,
         param_dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """DDP (LoRA, small models) or FSDP2 full sharding (`shard`); the module as it is without a
    process group."""
    if not is_distributed():
        return module
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
    return shard(module, device, param_dtype)


def shard(module: torch.nn.Module, device: torch.device, param_dtype: torch.dtype = torch.float32,
          mesh=None) -> torch.nn.Module:
    """FSDP2 full sharding: fully_shard per transformer block, then the root, on an explicit device
    mesh (this group's, unless given); below fp32, FSDP computes in `param_dtype` from fp32 master
    shards and reduces gradients in fp32 (no autocast copy of the whole model). Works on a module on
    the meta device too (start-up: shard first, then materialise only this rank's shards)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = mesh or init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) \
        if param_dtype != torch.float32 else MixedPrecisionPolicy()
    for blocks in ("transformer_blocks", "single_transformer_blocks"):
        for block in getattr(module, blocks, []):
            fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(module, mesh=mesh, mp_policy=mp)
    return module


@contextlib.contextmanager
def gathered(module: torch.nn.Module, keep: bool = True):
    """Inside: an FSDP2 module keeps each block's gathered (bf16) parameters from its first forward on,
    so the many no-grad forwards of sampling all-gather the model once instead of once per forward;
    on exit every block is resharded and FSDP's defaults return (blocks reshard after forward; the
    root keeps its own parameters gathered, as it does after any forward). `keep=False`, DDP and
    plain modules: no change."""
    from torch.distributed.fsdp import FSDPModule

    if not keep or not isinstance(module, FSDPModule):
        yield
        return
    module.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for m in module.modules():
            if isinstance(m, FSDPModule) and m is not module:
                m.reshard()
        module.set_reshard_after_forward(True)
        module.set_reshard_after_forward(False, recurse=False)  # the root's own default


def no_sync(module: torch.nn.Module, skip: bool):
    """Skip DDP's gradient all-reduce for this backward (all but the last of an optimizer step). FSDP2
    reduce-scatters every backward: skipping it would keep full-size gradients of the whole model on
    every GPU until the step."""
    if skip and is_distributed() and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()
