"""Evaluation: sample the test prompts with per-prompt seeds, score every metric, summarise.

Seeds depend on (eval seed, prompt index, sample index) only, so the per-image results are identical
whether one process or many generate them (shards take prompt indices rank::world, each with all its
samples). Several samples per prompt average out the sampling noise of a prompt's score, which
otherwise counts as prompt-to-prompt variation in every paired comparison (egrpo.stats).
Two samplers: our ODE sampler on the training schedule (the embedded world), or diffusers'
FluxPipeline with its own schedule (the paper's FLUX protocol: 1024x1024, 50 steps, guidance 3.5).
The model samples in `EvalSpec.dtype` (the release's fp16 on a GPU); the metrics score in fp32
(`precision`) against the prompt, or against the release's file name (`score_text`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .errors import NonFiniteRewardError
from .flux import FluxBackbone
from .progress import Progress
from .protocol import EvalSpec
from .rewards import Reward, score
from .sampler import initial_noise, sample
from .schedule import shifted_sigmas
from .seeding import derive_seed, generator
from .stats import per_prompt
from .transitions import make_transitions


def model_dtype(spec: EvalSpec, device: torch.device) -> torch.dtype:
    """The dtype the evaluated model is loaded and sampled in: `auto` is the release's fp16 on a GPU (C
    casts the trained fp32 weights and the whole pipeline to fp16) and fp32 on a CPU."""
    from .flux import resolve_dtype

    if spec.dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return resolve_dtype(spec.dtype, device)


def release_file_name(prompt: str) -> str:
    """The E-GRPO release's evaluation scores each image against its file name, not its prompt: the
    prompt with \\/:*?"<>| replaced by _ and cut at 200 characters (C eval.py:21-23, 71-73;
    test_hps_score.py:65 takes the name without .png as the text)."""
    return re.sub(r'[\\/:*?"<>|]', "_", prompt)[:200].rstrip() or "untitled"


def scored_texts(prompts: Sequence[str], rule: str = "prompt") -> list[str]:
    """The text each image is scored against: its prompt, or (`filename`) the release's file name."""
    if rule not in ("prompt", "filename"):
        raise ValueError(f"score_text: prompt or filename, got {rule!r}")
    return list(prompts) if rule == "prompt" else [release_file_name(p) for p in prompts]


def _seed_parts(spec: EvalSpec, prompt_index: int, sample: int) -> tuple:
    # sample 0 keeps the one-sample protocol's seed: `samples: 1` reproduces earlier evaluations exactly
    return ("eval", spec.seed, prompt_index) + ((sample,) if sample else ())


def image_seed(spec: EvalSpec, prompt_index: int, sample: int = 0) -> int:
    return derive_seed(*_seed_parts(spec, prompt_index, sample))


def image_name(prompt_index: int, sample: int = 0) -> str:
    return f"{prompt_index:05d}.png" if sample == 0 else f"{prompt_index:05d}.{sample}.png"


@torch.no_grad()
def generate(backbone: FluxBackbone, prompts: Sequence[str], indices: Sequence[int], spec: EvalSpec,
             sample_index: int = 0, progress: Progress | None = None) -> torch.Tensor:
    """Images [len(indices), 3, H, W] in [0, 1] for prompts[indices]: the seeded sample_index-th image of each
    (a line in the log per batch of spec.batch prompts when given a Progress)."""
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
        else:  # flux_pipeline
            n, c = backbone.packed_shape(spec.height, spec.width)
            latents = initial_noise(backbone, gens, spec.height, spec.width).to(backbone.dtype)
            images = backbone.pipe(texts, height=spec.height, width=spec.width, num_inference_steps=spec.num_steps,
                                   guidance_scale=spec.guidance, latents=latents, output_type="pt",
                                   max_sequence_length=backbone.max_sequence_length).images
            out.append(images.float().cpu())
        if progress is not None:
            progress.step()
    return torch.cat(out)


def score_images(images: torch.Tensor, prompts: Sequence[str], metrics: dict[str, Reward], batch: int = 64,
                 indices: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Every metric on every image, in batches; a failing metric raises, a non-finite score naming the
    metric and the prompts (`indices`: the images' prompt indices, for the message)."""
    indices = list(range(len(images))) if indices is None else list(indices)
    out = {}
    for name, fn in metrics.items():
        parts = []
        for k in range(0, len(images), batch):
            try:
                parts.append(score(fn, name, images[k:k + batch], prompts[k:k + batch]))
            except NonFiniteRewardError as e:
                bad = [indices[k + i] for i in getattr(e, "samples", [])]
                raise NonFiniteRewardError(f"metric {name!r} scored test prompts {bad[:10]} as NaN or infinite; "
                                           "no result was written") from None
        out[name] = torch.cat(parts).numpy()
    return out


def evaluate(backbone: FluxBackbone, prompts: Sequence[str], metrics: dict[str, Reward], spec: EvalSpec,
             *, rank: int = 0, world: int = 1, image_dir: str | Path | None = None,
             score_text: str = "prompt") -> pd.DataFrame:
    """Per-image table (prompt_index, sample, prompt, seed, one column per metric) for this shard:
    spec.samples rows per prompt; with score_text `filename`, also the text scored (scored_text)."""
    indices = list(range(rank, len(prompts), world))
    texts = [prompts[k] for k in indices]
    scored = scored_texts(texts, score_text)
    frames = []
    batches = -(-len(indices) // spec.batch)
    progress = Progress("evaluation", spec.samples * batches, unit="batch", enabled=rank == 0)
    for j in range(spec.samples):
        images = generate(backbone, prompts, indices, spec, sample_index=j, progress=progress)
        scores = score_images(images, scored, metrics, indices=indices)
        if image_dir is not None:
            save_images(images, [image_name(k, j) for k in indices], image_dir)
        df = pd.DataFrame({"prompt_index": indices, "sample": j, "prompt": texts,
                           "seed": [image_seed(spec, k, j) for k in indices]})
        if score_text != "prompt":
            df["scored_text"] = scored
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
