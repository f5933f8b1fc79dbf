"""Start-up of a fully fine-tuned transformer under FSDP2: shard first, then load.

The obvious order (load the whole transformer onto every GPU, upcast it to fp32 master weights, then
shard) holds FLUX.1-dev's whole fp32 transformer, 44.3 GiB, on every GPU for a moment: more than any
later phase of a run on 8 GPUs, and the whole pipeline in every rank's host RAM. Here every rank builds
the transformer on the meta device (no memory), shards it, allocates only its own fp32 shards, and rank
0 alone reads the weights and broadcasts them one tensor at a time (torch.distributed.checkpoint's
`set_model_state_dict` with `full_state_dict` and `broadcast_from_rank0`): per GPU, the shards and one
tensor in flight. The values are those of the obvious order: the stored weights, cast to fp32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import distributed as dist
from .errors import WeightsMissingError


def builds_sharded(parallel: str, lora_rank: int) -> bool:
    """Whether a run's transformer starts up sharded (FSDP2 full fine-tuning under a process group);
    LoRA and DDP keep the whole frozen base on every GPU anyway and load it with the pipeline."""
    return parallel == "fsdp" and not lora_rank


def read_transformer(path: str | Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The transformer's weights from a Flux-format directory, on the CPU in `dtype` (diffusers' loader:
    single or sharded safetensors)."""
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel.from_pretrained(Path(path), subfolder="transformer", dtype=dtype).state_dict()


def sharded_transformer(path: str | Path | None, device: torch.device, *, load_dtype: torch.dtype,
                        compute_dtype: torch.dtype, gradient_checkpointing: bool, mesh=None,
                        arch: dict | None = None, state_dict: dict | None = None) -> torch.nn.Module:
    """FluxTransformer2DModel of `path`'s architecture, sharded over the process group (fp32 master
    shards on `device`, FSDP computing in `compute_dtype`), trainable, loaded with rank 0's copy of its
    weights read in `load_dtype`. Benchmarks without files give the architecture (`arch`) and rank 0's
    weights (`state_dict`) instead."""
    from diffusers import FluxTransformer2DModel
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    with torch.device("meta"):
        model = FluxTransformer2DModel(**arch) if arch is not None else \
            FluxTransformer2DModel.from_config(FluxTransformer2DModel.load_config(Path(path) / "transformer"))
    model.requires_grad_(True)
    if gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    dist.shard(model, device, compute_dtype, mesh=mesh)
    model.to_empty(device=device)  # this rank's fp32 shards, not yet written
    full = state_dict
    if full is None:
        full, error = {}, None
        if dist.rank() == 0:
            try:
                full = read_transformer(path, load_dtype)
            except (OSError, ValueError, KeyError, RuntimeError) as e:  # a corrupt config or weights file
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                error = f"Flux weight directory {path}: its transformer cannot be loaded ({first[:300]})"
        dist.raise_together(error, WeightsMissingError)  # the other ranks would wait in the broadcast
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True,
                                                               strict=True))
    return model
