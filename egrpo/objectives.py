"""GRPO objective math as free functions: group advantages, reward aggregation, the PPO-clip loss."""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import torch

Aggregation = Literal["normalise_each", "weight_then_normalise"]


def group_advantages(rewards: torch.Tensor, *, eps: float = 1e-8, clip: float = 5.0) -> torch.Tensor:
    """(R - mean_G R) / (std_G R + eps), clamped to +-clip. rewards: [G] -> [G].

    std is torch's default unbiased estimate, as DanceGRPO/MixGRPO/E-GRPO compute it.
    """
    if rewards.numel() < 2:
        raise ValueError("a group needs at least 2 samples to normalise advantages")
    adv = (rewards - rewards.mean()) / (rewards.std() + eps)
    return adv.clamp(-clip, clip)


def combine_advantages(
    rewards: Mapping[str, torch.Tensor], weights: Mapping[str, float], mode: Aggregation, *,
    eps: float = 1e-8, clip: float = 5.0,
) -> torch.Tensor:
    """One advantage per sample of a group from several rewards ([G] each).

    normalise_each: sum_k w_k * A(R_k) (G2RPO/MixGRPO); weight_then_normalise: A(sum_k w_k R_k)
    (the E-GRPO authors' refactor, 0.7 HPS + 0.3 CLIP).
    """
    if mode == "normalise_each":
        return sum(weights[k] * group_advantages(r, eps=eps, clip=clip) for k, r in rewards.items())
    if mode == "weight_then_normalise":
        return group_advantages(sum(weights[k] * r for k, r in rewards.items()), eps=eps, clip=clip)
    raise ValueError(f"unknown aggregation {mode!r}")


def granularity_advantages(per_tail: Sequence[torch.Tensor]) -> torch.Tensor:
    """E-GRPO/G2RPO: advantages computed per ODE granularity (each normalised in its group), summed."""
    return torch.stack(list(per_tail)).sum(0)


def clipped_ratio_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO-clip per row: max(-A r, -A clip(r, 1-eps, 1+eps)), r = exp(logp - logp_old).

    Returns (loss [B], ratio [B], clipped [B] bool).
    """
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.maximum(unclipped, clipped), ratio.detach(), (ratio.detach() - 1.0).abs() > clip_range
