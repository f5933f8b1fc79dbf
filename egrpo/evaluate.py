"""Evaluation: sample the test prompts with per-prompt seeds, score every metric, summarise.

Seeds depend on (eval seed, prompt index, sample index) only, so the per-image results are identical
whether one process or many generate them (shards take prompt indices rank::world, each with all its
samples). Several samples per prompt average out the sampling noise of a prompt's score, which
otherwise counts as prompt-to-prompt variation in every paired comparison (egrpo.stats).
Two samplers: our ODE sampler on the training schedule (the embedded world), or diffusers'
FluxPipeline with its own schedule (the paper's FLUX protocol: 1024x1024, 50 steps, guidance 3.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .flux import FluxBackbone
from .rewards import Reward, score
from .sampler import initial_noise, make_transitions, sample
from .schedule import shifted_sigmas
from .seeding import derive_seed, generator
from .stats import per_prompt


SAMPLERS = ("ode", "flux_pipeline")


@dataclass(frozen=True)
class EvalSpec:
    sampler: str = "ode"  # "ode" (our sampler on shifted_sigmas) or "flux_pipeline"
    num_steps: int = 16
    shift: float = 3.0
    height: int = 32
    width: int = 32
    guidance: float = 3.5
    batch: int = 16
    seed: int = 42
    samples: int = 1  # images per prompt (the paper's protocol: one)

    @classmethod
    def from_dict(cls, d: dict, key: str = "sampler") -> "EvalSpec":
        """Validated: unknown keys, an unknown sampler and non-positive sizes are one-line ConfigErrors."""
        from .errors import ConfigError

        if not isinstance(d, dict):
            raise ConfigError(f"{key}: a mapping of sampler settings, got {d!r}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}: unknown key (known: {', '.join(cls.__dataclass_fields__)})")
        spec = cls(**d)
        if spec.sampler not in SAMPLERS:
            raise ConfigError(f"{key}.sampler: one of {', '.join(SAMPLERS)}, got {spec.sampler!r}")
        for name in ("num_steps", "height", "width", "batch", "samples"):
            if not isinstance(getattr(spec, name), int) or getattr(spec, name) < 1:
                raise ConfigError(f"{key}.{name}: a positive integer, got {getattr(spec, name)!r}")
        return spec


def _seed_parts(spec: EvalSpec, prompt_index: int, sample: int) -> tuple:
    # sample 0 keeps the one-sample protocol's seed: `samples: 1` reproduces earlier evaluations exactly
    return ("eval", spec.seed, prompt_index) + ((sample,) if sample else ())


def image_seed(spec: EvalSpec, prompt_index: int, sample: int = 0) -> int:
    return derive_seed(*_seed_parts(spec, prompt_index, sample))


def image_name(prompt_index: int, sample: int = 0) -> str:
    return f"{prompt_index:05d}.png" if sample == 0 else f"{prompt_index:05d}.{sample}.png"


@torch.no_grad()
def generate(backbone: FluxBackbone, prompts: Sequence[str], indices: Sequence[int], spec: EvalSpec,
             sample_index: int = 0) -> torch.Tensor:
    """Images [len(indices), 3, H, W] in [0, 1] for prompts[indices]: the seeded sample_index-th image of each."""
    out = []
    for lo in range(0, len(indices), spec.batch):
        idx = list(indices[lo:lo + spec.batch])
        texts = [prompts[k] for k in idx]
        gens = [generator(*_seed_parts(spec, k, sample_index)) for k in idx]
        if spec.sampler == "ode":
            e = backbone.encode_prompts(texts)
            x = initial_noise(backbone, gens, spec.height, spec.width)
            sig = shifted_sigmas(spec.num_steps, spec.shift)
            out.append(sample(backbone, e, sig, make_transitions(spec.num_steps), x, None,
                              height=spec.height, width=spec.width).images.cpu())
        elif spec.sampler == "flux_pipeline":
            n, c = backbone.packed_shape(spec.height, spec.width)
            latents = initial_noise(backbone, gens, spec.height, spec.width).to(backbone.dtype)
            images = backbone.pipe(texts, height=spec.height, width=spec.width, num_inference_steps=spec.num_steps,
                                   guidance_scale=spec.guidance, latents=latents, output_type="pt",
                                   max_sequence_length=backbone.max_sequence_length).images
            out.append(images.float().cpu())
        else:
            raise ValueError(f"unknown sampler {spec.sampler!r}")
    return torch.cat(out)


def score_images(images: torch.Tensor, prompts: Sequence[str], metrics: dict[str, Reward], batch: int = 64) -> dict[str, np.ndarray]:
    """Every metric on every image, in batches; a failing metric raises."""
    out = {}
    for name, fn in metrics.items():
        parts = [score(fn, name, images[k:k + batch], prompts[k:k + batch]) for k in range(0, len(images), batch)]
        out[name] = torch.cat(parts).numpy()
    return out


def evaluate(backbone: FluxBackbone, prompts: Sequence[str], metrics: dict[str, Reward], spec: EvalSpec,
             *, rank: int = 0, world: int = 1, image_dir: str | Path | None = None) -> pd.DataFrame:
    """Per-image table (prompt_index, sample, prompt, seed, one column per metric) for this shard:
    spec.samples rows per prompt."""
    indices = list(range(rank, len(prompts), world))
    texts = [prompts[k] for k in indices]
    frames = []
    for j in range(spec.samples):
        images = generate(backbone, prompts, indices, spec, sample_index=j)
        scores = score_images(images, texts, metrics)
        if image_dir is not None:
            save_images(images, [image_name(k, j) for k in indices], image_dir)
        df = pd.DataFrame({"prompt_index": indices, "sample": j, "prompt": texts,
                           "seed": [image_seed(spec, k, j) for k in indices]})
        frames.append(df.assign(**scores))
    return pd.concat(frames).sort_values(["prompt_index", "sample"], kind="stable").reset_index(drop=True)


def save_images(images: torch.Tensor, names: Sequence[str], folder: str | Path) -> None:
    from .rewards.images import to_pil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for im, n in zip(to_pil(images), names):
        im.save(folder / n)


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def summarise(df: pd.DataFrame, metrics: Sequence[str], weights: str = "base") -> pd.DataFrame:
    """mean, std and bootstrap 95% CI over prompts (each the mean of its samples) per metric, and which
    weights were scored (the trained weights' sha256 prefix, or `base`)."""
    rows = []
    prompts = per_prompt(df, metrics) if "prompt_index" in df else df
    for m in metrics:
        v = prompts[m].to_numpy(dtype=np.float64)
        lo, hi = bootstrap_ci(v)
        rows.append({"metric": m, "mean": v.mean(), "std": v.std(ddof=1) if len(v) > 1 else 0.0,
                     "ci_low": lo, "ci_high": hi, "n": len(v), "weights": weights})
    return pd.DataFrame(rows)
