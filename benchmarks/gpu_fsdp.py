"""The configuration config/flux.yaml trains, checked on one GPU: full fine-tuning under FSDP2 (a
process group of one, as torchrun gives a job of one GPU), bf16 compute with fp32 master weights,
gradient checkpointing, DanceGRPO's 12 distinct rows per training forward at 720x720, on a
FLUX-architecture transformer trimmed to fit one GPU (FLUX.1-dev's widths, fewer blocks). One command,
under 8 minutes on an H100/H200:

    python benchmarks/gpu_fsdp.py [--out DIR]      # on a GPU machine (no network needed)
    python benchmarks/gpu_fsdp.py --tiny           # the same path on CPU processes (CI smoke test)

Steps, each through the code a user runs (`egrpo train`, `egrpo memory`, `egrpo evaluate`):
1. the memory plan of the run config (egrpo memory), 2. two iterations under `torchrun
--nproc-per-node 1` with a sharded checkpoint each iteration (the log records peak GPU memory),
3. a third iteration resumed from that checkpoint, 4. one evaluation of the trained run on the GPU.
Writes gpu_fsdp.json (measured peak against the plan, times, resume and evaluation results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_model(path: Path, tiny: bool) -> dict:
    """A Flux-format pipeline: FLUX.1-dev's transformer widths with 4 + 8 blocks (about 2.5 B parameters:
    fp32 master weights, gradients and AdamW moments fit one 80 GB GPU), FLUX.1-dev's VAE, one-layer text
    encoders of FLUX's output widths. Tiny on CPU."""
    from egrpo.standins import FLUX_VAE_SCALING, FLUX_VAE_SHIFT
    from egrpo.tiny_flux import TinyFluxSpec, build_tiny_flux

    spec = TinyFluxSpec(max_text_len=16, latent_channels=16, vae_channels=(16, 16, 32, 32),
                        vae_scaling_factor=FLUX_VAE_SCALING, vae_shift_factor=FLUX_VAE_SHIFT) if tiny else TinyFluxSpec(
        max_text_len=512, text_dim=4096, clip_dim=768, latent_channels=16, vae_channels=(128, 256, 512, 512),
        num_layers=4, num_single_layers=8, num_heads=24, head_dim=128, axes_dims_rope=(16, 56, 56),
        vae_scaling_factor=FLUX_VAE_SCALING, vae_shift_factor=FLUX_VAE_SHIFT)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # written in bf16, as FLUX.1-dev ships
    try:
        build_tiny_flux(spec).save_pretrained(path, safe_serialization=True)
    finally:
        torch.set_default_dtype(default)
    return {"max_text_len": spec.max_text_len}


def run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({r.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_fsdp_"))
    res = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__}
    t0 = time.perf_counter()
    spec = write_model(work / "model", args.tiny)
    res["write_model_s"] = time.perf_counter() - t0
    side = 64 if args.tiny else 720
    config = {
        "name": "gpu-fsdp", "method": {"name": "dancegrpo", "group_size": 4 if args.tiny else 12},
        "model": {"path": str(work / "model"), "height": side, "width": side, "max_sequence_length": spec["max_text_len"],
                  "gradient_checkpointing": True, "decode_batch": 8, "cudnn_attention": False},
        "train": {"prompts": ["A papaya fruit dressed as a sailor", "A spoon dressed up with eyes and a smile"],
                  "iterations": 2, "prompts_per_iteration": 1, "checkpoint_every": 1, "micro_batch": 12,
                  "sample_batch": 24, "parallel": "fsdp"},
        "optim": {"lr": 1e-5}, "rewards": {"names": ["brightness"]},
    }
    (work / "run.yaml").write_text(yaml.safe_dump(config))
    egrpo = [sys.executable, "-m", "egrpo"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "egrpo"]

    # 1. the plan
    plan = subprocess.run(egrpo + ["memory", "--config", str(work / "run.yaml"), "--gpus", "1"],
                          capture_output=True, text=True, check=True).stdout
    (out / "gpu_fsdp_plan.txt").write_text(plan)
    res["plan_training_step_gib"] = float(plan.split("training step: ")[1].split(" GiB")[0])
    res["plan_peak_gib"] = float(plan.split("  peak ")[1].split(" GiB")[0])
    json.dump(res, open(out / "gpu_fsdp.json", "w"), indent=2)  # written early: a run past the limit keeps this

    # 2. two iterations, sharded checkpoints; 3. one more, resumed from the checkpoint
    train = torchrun + ["train", "--config", str(work / "run.yaml"), "--out", str(work / "run"), "--no-progress"]
    res["train_2_iterations_s"] = run(train, out / "gpu_fsdp_train.log")
    res["resume_s"] = run(train + ["--set", "train.iterations=3"], out / "gpu_fsdp_resume.log")
    res["resumed"] = "resuming from the checkpoint at iteration 2" in (out / "gpu_fsdp_resume.log").read_text()
    log = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    res["iterations_logged"] = [r["iteration"] for r in log]
    res["iteration_s"] = [round(r["time/total"], 2) for r in log]
    if "memory/peak_gib" in log[0]:
        res["measured_peak_gib"] = max(r["memory/peak_gib"] for r in log)
        res["measured_over_planned"] = res["measured_peak_gib"] / res["plan_peak_gib"]
    res["checkpoint_files"] = sorted(f.name for f in (work / "run" / "checkpoints" / "last").iterdir())
    json.dump(res, open(out / "gpu_fsdp.json", "w"), indent=2)

    # 4. the trained run evaluated on the device
    protocol = {"prompts": config["train"]["prompts"], "metrics": {"brightness": {"reward": "brightness"}},
                "sampler": {"sampler": "flux_pipeline", "num_steps": 4 if args.tiny else 28, "height": side,
                            "width": side, "batch": 2}, "max_sequence_length": spec["max_text_len"]}
    (work / "eval.json").write_text(json.dumps(protocol))
    res["evaluate_s"] = run(egrpo + ["evaluate", "--run", str(work / "run"), "--protocol", str(work / "eval.json"),
                                     "--device", "auto", "--out", str(work / "eval.csv")], out / "gpu_fsdp_eval.log")
    summary = (work / "eval.summary.csv").read_text()
    res["evaluation_summary"] = summary
    res["evaluated_trained_weights"] = "base" not in summary.splitlines()[1]
    json.dump(res, open(out / "gpu_fsdp.json", "w"), indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
