"""Reward scores at lower precision against fp32, on the same images: the four metrics' tiny stand-ins
(egrpo.standins: the real classes and formats, random weights, so the sizes are indicative, not
FLUX.1-dev's) scored in fp32, bf16 (weights and arithmetic: the harness's former GPU default) and fp16
autocast over fp32 weights (amp; on this CPU through CPU autocast, which also runs layer norms and
softmax in fp16 where CUDA's autocast keeps fp32: an upper bound of amp's error on a GPU).

Per image: the score's difference to fp32. Per comparison: two image sets standing for two methods
evaluated on the same prompts (B = A with its contrast raised 5%), and how much the difference of
their mean scores, what Table 1 compares, moves with the precision. Both in units of the scores' sd
over the images (the stand-ins' scales are arbitrary: the untrained ImageReward head's is ~1000).

    python benchmarks/reward_precision.py [--images 64] [--size 64] [--device cuda]

On a GPU (--device cuda) amp is the real one, CUDA's fp16 autocast; each row also names the dtypes
the scorer's nn.Linear layers held and computed in, the check that each precision reaches the model.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from egrpo import standins
from egrpo.rewards import build_reward, score
from egrpo.rewards.images import Precision


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Images with structure at several scales (upsampled noise), in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, 3, size, size)
    for cells in (2, 4, 8, 16):
        out += F.interpolate(torch.rand(n, 3, cells, cells, generator=g), size=size, mode="bicubic",
                             align_corners=False) / 4
    return out.clamp(0, 1)


def stand_ins(folder: Path) -> dict[str, dict]:
    hps, hps_model = standins.write_hps(folder / "hps")
    clip = standins.write_open_clip_dir(folder / "clip")
    pick_model, pick_processor = standins.write_pickscore(folder / "pick", folder / "pick_processor")
    words = [w.strip(",").lower() for p in standins.hpdv2_prompts(200, 0) for w in p.split()]
    ir = standins.write_image_reward(folder / "ir", folder / "bert", words)
    return {"hpsv21": {"checkpoint": str(hps), "model": str(hps_model)}, "clip_score": {"checkpoint": str(clip)},
            "pickscore": {"model_dir": str(pick_model), "processor_dir": str(pick_processor)},
            "imagereward": {k: str(v) for k, v in ir.items()}}


@contextlib.contextmanager
def cpu_amp(device: torch.device):
    """On a CPU, amp's autocast on the CPU (fp16) in place of the GPU's; on a GPU, nothing changes."""
    if device.type == "cuda":
        yield
        return
    context = Precision.context
    Precision.context = lambda self: torch.autocast("cpu", dtype=torch.float16) if self.name == "amp" \
        else contextlib.nullcontext()
    try:
        yield
    finally:
        Precision.context = context


@contextlib.contextmanager
def linear_dtypes():
    """The (weight, output) dtypes of every nn.Linear run inside."""
    seen = set()

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor):
            seen.add((str(module.weight.dtype).removeprefix("torch."), str(output.dtype).removeprefix("torch.")))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    a = smooth_images(args.images, args.size, seed=0)
    b = (0.5 + (a - 0.5) * 1.05).clamp(0, 1)  # the "other method": contrast +5%
    prompts = standins.hpdv2_prompts(args.images, seed=1)
    print(f"{args.images} images of {args.size}x{args.size}, stand-in reward models (random weights)\n")
    print("| metric | precision | score sd (fp32) | mean abs diff per image | max abs diff | mean diff / sd "
          "| Δ(A-B) fp32 / sd | Δ(A-B) here / sd | change of Δ / sd | Linear weights / compute |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        options = stand_ins(Path(tmp))
        for name, opts in options.items():
            ref = {}
            for precision in ("fp32", "bf16", "amp"):
                with cpu_amp(device), linear_dtypes() as seen:
                    fn = build_reward(name, {**opts, "precision": precision}, device)
                    sa, sb = score(fn, name, a, prompts, 16).double(), score(fn, name, b, prompts, 16).double()
                dtypes = ", ".join("/".join(d) for d in sorted(seen))
                if precision == "fp32":
                    ref = {"a": sa, "b": sb, "sd": float(sa.std()), "delta": float(sa.mean() - sb.mean())}
                    continue
                diff = (sa - ref["a"]).abs()
                delta = float(sa.mean() - sb.mean())
                label = {"bf16": "bf16", "amp": "amp (CUDA)" if device.type == "cuda" else "fp16 autocast (CPU)"}[precision]
                sd = ref["sd"]
                print(f"| {name} | {label} | {sd:.4g} | {float(diff.mean()):.2e} | {float(diff.max()):.2e} | "
                      f"{float(diff.mean()) / sd:.4f} | {ref['delta'] / sd:+.4f} | {delta / sd:+.4f} | "
                      f"{(delta - ref['delta']) / sd:+.5f} | {dtypes} |", flush=True)


if __name__ == "__main__":
    main()
