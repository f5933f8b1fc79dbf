"""How much of a run's weight update survives an export in a lower precision: each method trained with
its learning rate, update schedule, group size and steps from config/flux.yaml on a small Flux-format
model whose base weights are bf16-valued (as FLUX.1-dev's published ones), then its fp32 master
weights w against w0 (the base) and against their bf16 rounding (the harness's former export) and
fp16 rounding (what C's evaluation casts the saved fp32 weights to).

An element's update survives a rounding when the rounded weight differs from the base; `delta error`
is ||round(w) - w|| / ||w - w0||, the part of the update the rounding changes (0: kept exactly; 1:
an error as large as the update). AdamW's step is about lr per element whatever the loss scale, so
what survives depends on lr x steps against the weights' ulp: a bf16 weight near |w| keeps updates
above about |w| / 512.

    python benchmarks/export_precision.py --model DIR [--iterations 100] [--marks 10 30 100]

DIR: a Flux-format directory (the world's base model: `egrpo world pretrain --out DIR --vae-steps 600
--flow-steps 1000`); the world's HPS-role reward (world_preference) on its training captions,
1 prompt an iteration, 32x32.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml

from egrpo.config import resolve
from egrpo.trainer import Trainer
from egrpo.world.shapes import TRAIN_CAPTIONS

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("egrpo", "dancegrpo", "mixgrpo")


def bf16_base(model: Path, out: Path) -> Path:
    """A copy of `model` whose transformer weights are rounded to bf16 (FLUX.1-dev ships bf16)."""
    from diffusers import FluxTransformer2DModel

    shutil.copytree(model, out)
    t = FluxTransformer2DModel.from_pretrained(model / "transformer")
    t.to(torch.bfloat16).save_pretrained(out / "transformer", safe_serialization=True)
    return out


def run_config(model: Path, method: str, iterations: int, size: int, text_len: int):
    """config/flux.yaml's run config of `method` (lr, optimizer, method and update schedule), at this
    model's size, one prompt an iteration, on one CPU process."""
    raw = yaml.safe_load((ROOT / "config" / "flux.yaml").read_text())["training"]
    raw["model"] = {**raw["model"], "path": str(model), "height": size, "width": size, "max_sequence_length": text_len,
                    "gradient_checkpointing": False, "device": "cpu", "decode_batch": None}
    raw["train"] = {**raw["train"], "prompts": [c.text for c in TRAIN_CAPTIONS], "iterations": iterations,
                    "parallel": "ddp", "sample_batch": None, "probe": False}
    raw["rewards"] = {"names": ["world_preference"]}
    return resolve(raw, method, overrides=["train.prompts_per_iteration=1"])


def survival(params: list[torch.Tensor], base: list[torch.Tensor]) -> dict:
    w = torch.cat([p.detach().flatten() for p in params]).double()
    w0 = torch.cat([b.flatten() for b in base]).double()
    delta = w - w0
    changed = delta != 0
    row = {"changed": float(changed.double().mean()), "median |d|/|w0|": float((delta.abs() / w0.abs().clamp(min=1e-12))[changed].median()),
           "max |d|": float(delta.abs().max())}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        r = w.float().to(dtype).double()
        r0 = w0.float().to(dtype).double()
        row[f"{name} survive"] = float(((r != r0) & changed).double().sum() / changed.double().sum().clamp(min=1))
        row[f"{name} delta error"] = float((r - w).norm() / delta.norm().clamp(min=1e-30))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--marks", type=int, nargs="+", default=[10, 30, 100, 300])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = p.parse_args()
    torch.set_num_threads(1)
    marks = sorted(m for m in set(args.marks) | {args.iterations} if m <= args.iterations)
    config = yaml.safe_load((args.model / "transformer" / "config.json").read_text())
    size = 32
    print("| method | lr | iterations | AdamW steps | elements changed | median |Δw|/|w0| | bf16: updates kept | "
          "bf16: delta error | fp16: updates kept | fp16: delta error | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        model = bf16_base(args.model, Path(tmp) / "base")
        for method in args.methods:
            cfg = run_config(model, method, args.iterations, size, 10)
            trainer = Trainer(cfg, Path(tmp) / method, progress=False)
            base = [q.detach().clone() for q in trainer.params]
            assert all(torch.equal(b, b.bfloat16().float()) for b in base)
            steps, t0 = 0, time.perf_counter()
            for it in range(args.iterations):
                steps += trainer.step(it)["updates"]
                if it + 1 in marks:
                    r = survival(trainer.params, base)
                    print(f"| {method} | {cfg.optim.lr:g} | {it + 1} | {steps} | {r['changed']:.3f} | "
                          f"{r['median |d|/|w0|']:.2e} | {r['bf16 survive']:.3f} | {r['bf16 delta error']:.3f} | "
                          f"{r['fp16 survive']:.3f} | {r['fp16 delta error']:.3f} | {time.perf_counter() - t0:.0f} |",
                          flush=True)
    print(f"\nmodel: {args.model} (transformer {sum(v for k, v in config.items() if k == 'num_layers')} double + "
          f"{config.get('num_single_layers')} single blocks), {size}x{size}, reward world_preference")


if __name__ == "__main__":
    main()
