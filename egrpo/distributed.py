"""Thin helpers over torch.distributed for torchrun: rank/world, reductions, DDP/FSDP2 wrapping.

Single-process runs need no process group; every helper degrades to the identity.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes; (rank, world). On CUDA, NCCL carries GPU tensors and
    gloo the CPU ones (the iteration's counters and rewards are reduced on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def local_device(requested: str) -> torch.device:
    """'auto' = this rank's GPU (LOCAL_RANK) when CUDA exists, else CPU."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


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


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap(module: torch.nn.Module, parallel: str, device: torch.device) -> torch.nn.Module:
    """DDP (LoRA, small models) or FSDP2 full sharding (fully_shard per transformer block, then root)."""
    if not is_distributed():
        return module
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for blocks in ("transformer_blocks", "single_transformer_blocks"):
        for block in getattr(module, blocks, []):
            fully_shard(block)
    fully_shard(module)
    return module


def no_sync(module: torch.nn.Module, skip: bool):
    """Skip gradient synchronisation for this backward (all but the last micro-batch)."""
    if not skip or not is_distributed():
        return contextlib.nullcontext()
    if hasattr(module, "no_sync"):  # DDP
        return module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def _ctx():
            module.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                module.set_requires_gradient_sync(True)

        return _ctx()
    return contextlib.nullcontext()
