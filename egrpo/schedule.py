"""Sampling schedules: sigma runs from 1 (pure noise) to 0 (image). torch is imported at call time: the
method configs (their defaults, e.g. flux_dynamic_shift) are read where torch may be absent (the Snakefile)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def time_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3/FLUX time shift sigma = s*t / (1 + (s-1)*t); s = 3 in every GRPO reference config."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def shifted_sigmas(num_steps: int, shift: float) -> torch.Tensor:
    """The T+1 sigmas of a T-step schedule, t_k = 1 - k/T shifted by `shift` (float64 -> fp32).

    Steps are addressed by integer index k; sigmas[0] == 1 and sigmas[T] == 0 exactly.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    import torch

    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return time_shift(t, shift).to(torch.float32)


def quantized_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """FLUX's conditioning timestep int(sigma * 1000) / 1000 as every reference computes it: the product
    in float32, truncated (at T = 16, sigma_4 * 1000 rounds to 900.0 in float32 while the float64
    product floors to 899)."""
    import torch

    return torch.trunc(torch.as_tensor(sigma, dtype=torch.float32) * 1000.0) / 1000.0


def flux_dynamic_shift(height: int, width: int) -> float:
    """The time shift s = e^mu of FLUX's resolution-dependent schedule (diffusers' FluxPipeline:
    mu linear in the image tokens, 0.5 at 256 tokens and 1.15 at 4,096; TempFlow-GRPO samples with
    it): 2.22 at 720x720, 3.16 at 1024x1024."""
    tokens = (height // 16) * (width // 16)
    slope = (1.15 - 0.5) / (4096 - 256)
    return math.exp(0.5 + slope * (tokens - 256))
