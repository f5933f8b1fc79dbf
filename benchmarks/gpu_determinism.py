"""The cost of `determinism.gpu` on one GPU, and whether it makes a training step repeat bit for bit.

    python benchmarks/gpu_determinism.py            # on a GPU machine (no weights, no network)
    python benchmarks/gpu_determinism.py --tiny     # CPU smoke test of the same code path

Runs itself twice, in fresh processes (the switches are process-wide and cuBLAS reads its workspace
setting when it starts): once with torch's defaults, once with egrpo.determinism's GPU switches. Each
process times forward and forward+backward of a FLUX.1-dev-width transformer (full width, 24 heads of
128, 720x720 + 512 text tokens, bf16, gradient checkpointing; 4 double + 8 single blocks, a fifth of
FLUX.1-dev's depth, so it fits beside its gradients on one GPU) and runs the same step twice from the
same inputs, reporting whether the two gradients are bitwise equal. Prints the deterministic/default
time ratios measured in this run; writes gpu_determinism.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a copied tree, never pip-installed: egrpo from here

TINY = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 6, 6))


def measure(deterministic: bool, tiny: bool) -> dict:
    import torch

    from egrpo import determinism
    from egrpo.config import DeterminismConfig

    determinism.apply(DeterminismConfig(gpu=deterministic))
    if deterministic:  # as the trainer does under determinism.gpu
        torch.backends.cuda.enable_cudnn_sdp(False)
    from diffusers import FluxTransformer2DModel

    sys.path.insert(0, os.path.dirname(__file__))
    from gpu_flux import inputs, timed

    from egrpo.memory import FLUX_DEV

    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = TINY if tiny else {**FLUX_DEV, "num_layers": 4, "num_single_layers": 8}
    img, txt = (64, 16) if tiny else (45 * 45, 512)
    torch.manual_seed(0)
    with torch.device(device):
        model = FluxTransformer2DModel(**cfg).to(dtype)
    model.enable_gradient_checkpointing()
    x = inputs(cfg, 2, img, txt, device, dtype)
    with torch.no_grad():
        fwd = timed(lambda: model(**x), device)
    model.requires_grad_(True)

    def step():
        model.zero_grad(set_to_none=True)
        model(**x)[0].float().square().mean().backward()

    fwdbwd = timed(step, device, reps=2)
    grads = []
    for _ in range(2):
        step()
        grads.append(torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None]).cpu())
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "fwd_s": fwd, "fwdbwd_s": fwdbwd, "repeats_bitwise": bool(torch.equal(grads[0], grads[1])),
            "max_abs_diff": float((grads[0] - grads[1]).abs().max()),
            "switches": determinism.determinism_flags(),
            "gpu": determinism.gpu_info(device) if device.type == "cuda" else None}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--mode", choices=["default", "deterministic"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:  # one half, in its own process
        print(json.dumps(measure(args.mode == "deterministic", args.tiny)))
        return
    res = {}
    for mode in ("default", "deterministic"):
        cmd = [sys.executable, __file__, "--mode", mode] + (["--tiny"] if args.tiny else [])
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res[mode] = {**json.loads(r.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - t}
    for k in ("fwd_s", "fwdbwd_s"):
        res[f"ratio_{k}"] = res["deterministic"][k] / res["default"][k]
    with open(os.path.join(args.out, "gpu_determinism.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps({k: v for k, v in res.items() if k.startswith("ratio")} |
                     {f"{m}_repeats_bitwise": res[m]["repeats_bitwise"] for m in ("default", "deterministic")}))


if __name__ == "__main__":
    main()
