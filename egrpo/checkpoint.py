"""Checkpoints (atomic, resumable) and the exported trained weights used by evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def trainable_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None):
    """Full (gathered, CPU) state of the trainable parameters and the optimizer, for any wrapping."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    if optimizer is None:
        model_sd = get_model_state_dict(module, options=opts)
        optim_sd = None
    else:
        model_sd, optim_sd = get_state_dict(module, optimizer, options=opts)
    return {k: v for k, v in model_sd.items() if k in names}, optim_sd


def load_trainable_state(module, optimizer, model_sd: dict, optim_sd: dict | None) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    opts = StateDictOptions(full_state_dict=True, strict=False)
    if optimizer is None or optim_sd is None:
        set_model_state_dict(module, model_sd, options=opts)
    else:
        set_state_dict(module, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=opts)


def export_trained(out_dir: Path, model_sd: dict, base_path: str, lora: dict | None) -> Path:
    """Write final/trainable.safetensors, a copy of log.jsonl and provenance.json, and final/meta.json
    (base model path, LoRA spec or null) last, so meta.json marks a complete export."""
    import shutil

    from safetensors.torch import save_file

    final = Path(out_dir) / "final"
    final.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model_sd.items()}, str(final / "trainable.safetensors.tmp"))
    os.replace(final / "trainable.safetensors.tmp", final / "trainable.safetensors")
    for name in ("log.jsonl", "provenance.json"):
        if (Path(out_dir) / name).is_file():
            shutil.copyfile(Path(out_dir) / name, final / name)
    (final / "meta.json").write_text(json.dumps({"base": base_path, "lora": lora}, indent=2))
    return final


def load_trained(final_dir: str | Path, *, device="cpu", dtype="auto", **kw):
    """A FluxBackbone with a run's trained weights applied (full fine-tune or LoRA)."""
    from safetensors.torch import load_file

    from .flux import FluxBackbone, WeightsMissingError

    final_dir = Path(final_dir)
    meta_path = final_dir / "meta.json"
    if not meta_path.is_file():
        raise WeightsMissingError(f"{meta_path} missing: {final_dir} is not a finished training run")
    meta = json.loads(meta_path.read_text())
    backbone = FluxBackbone.from_pretrained(meta["base"], device=device, dtype=dtype, **kw)
    if meta["lora"]:
        backbone.enable_training(lora_rank=meta["lora"]["rank"], lora_alpha=meta["lora"]["alpha"])
    sd = load_file(str(final_dir / "trainable.safetensors"))
    missing = set(sd) - set(backbone.transformer.state_dict())
    if missing:
        raise KeyError(f"{final_dir}: trained weights do not fit the base model: {sorted(missing)[:3]}")
    backbone.transformer.load_state_dict(sd, strict=False)
    backbone.transformer.requires_grad_(False).eval()
    return backbone
