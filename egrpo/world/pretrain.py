"""Pretrain the shapes world's base model: a tiny FLUX-architecture pipeline, saved in diffusers'
Flux format so the same loader as FLUX.1-dev loads it.

1. VAE (AutoencoderKL, /4, 8 latent channels): MSE + 1e-6 KL on renders of the training captions.
2. Latent statistics -> the VAE's shift_factor / scaling_factor (FLUX convention).
3. Transformer (FluxTransformer2DModel): rectified-flow matching, x_t = (1 - t) x0 + t eps, target
   eps - x0, logit-normal t, 10% caption dropout; text encoders stay at their seeded random init.
All steps are counted, not timed, so a run is deterministic on CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import progress
from ..determinism import record
from ..flux import FluxBackbone
from ..tiny_flux import TinyFluxSpec, build_tiny_flux
from .shapes import TRAIN_CAPTIONS, WORDS, make_dataset
from .spec import PretrainSpec, WorldSpec


def world_spec(seed: int = 0) -> TinyFluxSpec:
    """The base model's architecture (~0.5M-param transformer: 2 double + 2 single blocks, 2 heads of 32;
    width 64 samples 2.6x faster per row than 4 heads at a few points of base accuracy)."""
    return TinyFluxSpec(
        words=WORDS, max_text_len=10, text_dim=32, clip_dim=32, latent_channels=8, vae_channels=(16, 32, 32),
        num_layers=2, num_single_layers=2, num_heads=2, head_dim=32, axes_dims_rope=(8, 12, 12), seed=seed,
    )


def train_vae(vae, images: torch.Tensor, cfg: PretrainSpec, g: torch.Generator) -> float:
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    loss = torch.zeros(())
    bar = progress.Progress("world pretrain, vae", cfg.vae_steps, unit="step", lines=20)
    for k in range(cfg.vae_steps):
        x = images[torch.randint(len(images), (cfg.vae_batch,), generator=g)] * 2 - 1
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.reach(k + 1, loss=float(loss.detach()))
    vae.eval().requires_grad_(False)
    return float(loss.detach())


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([vae.encode(images[k:k + batch] * 2 - 1).latent_dist.mean for k in range(0, len(images), batch)])


def train_flow(bb: FluxBackbone, latents: torch.Tensor, cap_idx: torch.Tensor, embeds, empty, cfg: PretrainSpec,
               g: torch.Generator) -> float:
    tr = bb.transformer
    tr.train().requires_grad_(True)
    opt = torch.optim.AdamW(tr.parameters(), lr=cfg.flow_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    x_all = bb.pack(latents)
    loss = torch.zeros(())
    bar = progress.Progress("world pretrain, transformer", cfg.flow_steps, unit="step", lines=20)
    for k in range(cfg.flow_steps):
        idx = torch.randint(len(x_all), (cfg.flow_batch,), generator=g)
        x0 = x_all[idx]
        t = torch.sigmoid(torch.randn(cfg.flow_batch, generator=g))  # logit-normal, as SD3/FLUX
        eps = torch.randn(x0.shape, generator=g)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
        e = embeds.select(cap_idx[idx])
        drop = torch.rand(cfg.flow_batch, generator=g) < cfg.caption_dropout
        e = type(e)(torch.where(drop[:, None, None], empty.prompt, e.prompt),
                    torch.where(drop[:, None], empty.pooled, e.pooled), e.text_ids)
        v = bb.velocity(xt, t, e, cfg.size, cfg.size)
        loss = F.mse_loss(v, eps - x0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.reach(k + 1, loss=float(loss.detach()))
    tr.eval().requires_grad_(False)
    return float(loss.detach())


def pretrain(out: str | Path, spec: WorldSpec = WorldSpec(), log=progress.log.info) -> Path:
    """Train VAE then transformer; save a Flux-format directory at `out` (+ pretrain.json). Progress: a
    timestamped line per chunk of steps (egrpo.progress), and `log` for each phase's summary."""
    out, cfg, arch = Path(out), spec.pretrain, world_spec()
    torch.manual_seed(spec.seed)
    g = torch.Generator().manual_seed(spec.seed)
    images, idx = make_dataset(TRAIN_CAPTIONS, cfg.images, cfg.size, spec.seed)
    pipe = build_tiny_flux(arch)
    t0 = time.perf_counter()
    vae_loss = train_vae(pipe.vae, images, cfg, g)
    t1 = time.perf_counter()
    log(f"vae: {cfg.vae_steps} steps, final mse+kl {vae_loss:.4f}, {t1 - t0:.0f}s")
    z = encode_latents(pipe.vae, images)
    shift, std = float(z.mean()), float(z.std())
    pipe.vae.register_to_config(shift_factor=shift, scaling_factor=1.0 / std)
    latents = (z - shift) / std
    bb = FluxBackbone(pipe, device="cpu", dtype="fp32", max_sequence_length=arch.max_text_len)
    embeds = bb.encode_prompts([c.text for c in TRAIN_CAPTIONS])
    empty = bb.encode_prompts([""])
    flow_loss = train_flow(bb, latents, torch.tensor(idx), embeds, empty, cfg, g)
    t2 = time.perf_counter()
    log(f"transformer: {cfg.flow_steps} steps, final flow loss {flow_loss:.4f}, {t2 - t1:.0f}s")
    pipe.save_pretrained(out, safe_serialization=True)
    meta = {"world": spec.model_dump(mode="json"), "architecture": asdict(arch), "vae_loss": vae_loss,
            "flow_loss": flow_loss, "vae_seconds": t1 - t0, "flow_seconds": t2 - t1, "latent_shift": shift,
            "latent_std": std, "provenance": record()}
    (out / "pretrain.json").write_text(json.dumps(meta, indent=2, default=str))
    return out
