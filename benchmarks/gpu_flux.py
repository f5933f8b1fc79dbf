"""FLUX.1-dev-sized transformer on one GPU (no weights needed): throughput, MFU, memory, and one
E-GRPO iteration at paper settings with LoRA. Finishes in a few minutes on an H100/H200.

    python benchmarks/gpu_flux.py            # on a GPU machine (no network needed)
    python benchmarks/gpu_flux.py --tiny     # CPU smoke test of the same code path

Random-initialised FluxTransformer2DModel with FLUX.1-dev's published architecture (19 double + 38
single blocks, 24 heads of 128, joint dim 4096, pooled 768, guidance embedding), 720x720 images
(2025 packed latent tokens), 512 text tokens, bf16. Reports forward and forward+backward time per
sample, model FLOPs utilisation against the card's bf16 dense peak, peak memory of a LoRA step and
(estimated from a measured block, as a full 12B step needs FSDP over 8 GPUs) of a full fine-tuning
step per GPU, and one E-GRPO iteration (G = 12, 8 active steps, merge lengths 1,1,2,2,2,3,3,3,
granularities 1 and 2, LoRA rank 128) run by egrpo's own Trainer on a pipeline of FLUX.1-dev's
transformer and VAE sizes: its wall time split into sampling, reward and training, its transformer
passes and its peak memory. One iteration, no warm-up: the first CUDA calls are in it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import torch

from egrpo.memory import FLUX_DEV  # FLUX.1-dev's published architecture, declared once

TINY = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 6, 6))
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peak


def flops_per_sample(cfg: dict, img_tokens: int, txt_tokens: int, n_params: int) -> float:
    """Forward FLOPs: 2 * params * tokens for the matmuls + 4 * T^2 * d per block for attention."""
    t = img_tokens + txt_tokens
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    blocks = cfg["num_layers"] + cfg["num_single_layers"]
    return 2 * n_params * t + 4 * t * t * d * blocks


def timed(fn, device, reps=3):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def inputs(cfg, b, img_tokens, txt_tokens, device, dtype):
    from diffusers import FluxPipeline

    side = int(math.isqrt(img_tokens))
    return dict(
        hidden_states=torch.randn(b, img_tokens, cfg["in_channels"], device=device, dtype=dtype),
        encoder_hidden_states=torch.randn(b, txt_tokens, cfg["joint_attention_dim"], device=device, dtype=dtype),
        pooled_projections=torch.randn(b, cfg["pooled_projection_dim"], device=device, dtype=dtype),
        timestep=torch.full((b,), 0.5, device=device, dtype=dtype),
        guidance=torch.full((b,), 3.5, device=device, dtype=dtype),
        txt_ids=torch.zeros(txt_tokens, 3, device=device, dtype=dtype),
        img_ids=FluxPipeline._prepare_latent_image_ids(1, side, side, device, dtype),
        return_dict=False,
    )


def flux_pipeline(device, dtype, tiny: bool):
    """A FluxPipeline of FLUX.1-dev's transformer and VAE widths (random weights, built in `dtype` on
    `device`) with one-layer text encoders of FLUX's output widths: prompt embeddings are computed
    once per prompt, outside the iteration, so the encoders' depth does not matter here."""
    from egrpo.tiny_flux import TinyFluxSpec, build_tiny_flux

    spec = TinyFluxSpec(max_text_len=16) if tiny else TinyFluxSpec(
        max_text_len=512, text_dim=4096, clip_dim=768, latent_channels=16, vae_channels=(128, 256, 512, 512),
        num_layers=19, num_single_layers=38, num_heads=24, head_dim=128, axes_dims_rope=(16, 56, 56))
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # 12B parameters built in bf16 directly: 24 GB, not 48 + 24
    try:
        with torch.device(device):
            return build_tiny_flux(spec), spec
    finally:
        torch.set_default_dtype(default)


def egrpo_iteration(device, dtype, tiny: bool) -> dict:
    """Wall time, passes and peak memory of one E-GRPO iteration at paper settings on one GPU (1 prompt,
    G = 12, T = 16, tau 2.2, first 8 steps, granularities 1 and 2, LoRA rank 128, 720x720)."""
    from egrpo.config import resolve
    from egrpo.flux import FluxBackbone
    from egrpo.trainer import Trainer

    pipe, spec = flux_pipeline(device, dtype, tiny)
    side = 64 if tiny else 720
    raw = {"name": "gpu-bench",
           "model": {"path": "(in memory)", "height": side, "width": side, "max_sequence_length": spec.max_text_len,
                     "device": str(device), "lora_rank": 8 if tiny else 128, "gradient_checkpointing": True,
                     "cudnn_attention": torch.backends.cuda.cudnn_sdp_enabled(),
                     "decode_batch": 8},
           "train": {"prompts": ["a papaya fruit dressed as a sailor"], "iterations": 1, "prompts_per_iteration": 1,
                     "checkpoint_every": 1000, "micro_batch": 4, "sample_batch": 24, "probe": False},
           "optim": {"lr": 2e-6}, "rewards": {"names": ["brightness"]},
           "method": {"group_size": 4 if tiny else 12, "num_steps": 16, "tau": 2.2, "active": "first8",
                      "granularities": [1, 2]}}
    backbone = FluxBackbone(pipe, device=device, dtype=dtype, max_sequence_length=spec.max_text_len)
    trainer = Trainer(resolve(raw, "egrpo"), tempfile.mkdtemp(), backbone=backbone, progress=False)
    trainer.embeds(0)  # the prompt's text embedding: computed once per prompt, not per iteration
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    row = trainer.step(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    out = {"egrpo_iteration_s": time.perf_counter() - t0, "egrpo_sampling_s": row["time/sampling"],
           "egrpo_reward_s": row["time/reward"], "egrpo_training_s": row["time/training"],
           "egrpo_sampling_passes": row["passes/sampling"], "egrpo_training_passes": row["passes/training"]}
    if device.type == "cuda":
        out["egrpo_iteration_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def save(res: dict, out: str) -> None:
    with open(os.path.join(out, "gpu_flux.json"), "w") as f:
        json.dump(res, f, indent=2)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--no-cudnn-sdp", action="store_true",
                   help="keep PyTorch's SDPA off the cuDNN attention kernel (see benchmarks/sdpa_backends.py)")
    args = p.parse_args()
    if args.no_cudnn_sdp:
        torch.backends.cuda.enable_cudnn_sdp(False)
    from diffusers import FluxTransformer2DModel

    from egrpo.flux import add_lora

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = TINY if args.tiny else FLUX_DEV
    img_tokens, txt_tokens = (64, 16) if args.tiny else (45 * 45, 512)  # 720 px / 8 (VAE) / 2 (packing)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    res = {"device": name, "torch": torch.__version__, "cudnn_sdp": torch.backends.cuda.cudnn_sdp_enabled(),
           "img_tokens": img_tokens, "txt_tokens": txt_tokens}

    torch.manual_seed(0)
    with torch.device(device):
        model = FluxTransformer2DModel(**cfg).to(dtype)
    n_params = sum(p.numel() for p in model.parameters())
    res["params"] = n_params
    fl = flops_per_sample(cfg, img_tokens, txt_tokens, n_params)

    # ---- throughput: forward (no grad) and forward+backward (gradient checkpointing), batch 1 and 4
    model.enable_gradient_checkpointing()
    for b in (1, 4):
        x = inputs(cfg, b, img_tokens, txt_tokens, device, dtype)
        with torch.no_grad():
            t_f = timed(lambda: model(**x), device)
        model.requires_grad_(True)
        t_fb = timed(lambda: model(**x)[0].float().square().mean().backward(), device, reps=2)
        model.zero_grad(set_to_none=True)
        res[f"fwd_s_b{b}"], res[f"fwdbwd_s_b{b}"] = t_f / b, t_fb / b
        if peak:  # fwd+bwd with checkpointing = 4 forwards of FLOPs (1 + 1 recompute + 2 backward)
            res[f"mfu_fwd_b{b}"] = fl * b / t_f / peak
            res[f"mfu_fwdbwd_b{b}"] = 4 * fl * b / t_fb / peak
    model.requires_grad_(False)

    # ---- LoRA step peak memory (rank 128 on attention and MLP projections, as egrpo trains it), batch 1
    lora = add_lora(model, rank=128, alpha=256)
    opt = torch.optim.AdamW(lora, lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    x = inputs(cfg, 1, img_tokens, txt_tokens, device, dtype)
    with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
        model(**x)[0].float().square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        res["lora_step_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    res["lora_params"] = sum(p_.numel() for p_ in lora)

    # ---- full fine-tuning per GPU under FSDP over 8 GPUs (estimate): sharded fp32 master + grads +
    # Adam moments (16 bytes/param / 8), bf16 gathered block, checkpointed activations of one sample
    res["full_ft_sharded_state_gib_per_gpu_8"] = 16 * n_params / 8 / 2**30
    res["full_ft_bf16_params_gib_unsharded"] = 2 * n_params / 2**30

    # ---- one E-GRPO iteration through egrpo's own Trainer (plan, lockstep sampler, rewards, update)
    del model, opt, lora, x
    if device.type == "cuda":
        torch.cuda.empty_cache()
    save(res, args.out)  # kept if the iteration below runs past the machine's time limit
    res.update(egrpo_iteration(device, dtype, args.tiny))
    save(res, args.out)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
