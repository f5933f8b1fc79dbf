"""GRPO objective math as free functions: group advantages, reward aggregation, the PPO-clip loss."""

from __future__ import annotations

from typing import Literal, Mapping

import torch

Aggregation = Literal["normalise_each", "weight_then_normalise"]


def group_advantages(rewards: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """(R - mean_G R) / (std_G R + eps). rewards: [G] -> [G].

    std is torch's default unbiased estimate, as DanceGRPO/MixGRPO/E-GRPO compute it.
    """
    if rewards.numel() < 2:
        raise ValueError("a group needs at least 2 samples to normalise advantages")
    return (rewards - rewards.mean()) / (rewards.std() + eps)


def combine_advantages(rewards: Mapping[str, torch.Tensor], weights: Mapping[str, float], mode: Aggregation, *,
                       eps: float = 1e-8) -> torch.Tensor:
    """One unclamped advantage per sample of a group from several rewards ([G] each).

    normalise_each: sum_k w_k * A(R_k) (G2RPO, MixGRPO); weight_then_normalise: A(sum_k w_k R_k)
    (the E-GRPO authors' refactor, 0.7 HPS + 0.3 CLIP).
    """
    if mode == "normalise_each":
        return sum(weights[k] * group_advantages(r, eps=eps) for k, r in rewards.items())
    if mode == "weight_then_normalise":
        return group_advantages(sum(weights[k] * r for k, r in rewards.items()), eps=eps)
    raise ValueError(f"unknown aggregation {mode!r}")


def rollout_advantages(per_tail: Mapping[str, Mapping[str, torch.Tensor]], weights: Mapping[str, float],
                       mode: Aggregation, *, clip: float = 5.0, eps: float = 1e-8) -> torch.Tensor:
    """A group's advantages [G]: each tail's (E-GRPO's ODE granularities) rewards combined and
    normalised within the group, summed over tails, and the sum clamped to +-clip, as every
    reference clamps after summing (over granularities and over rewards)."""
    total = sum(combine_advantages(rewards, weights, mode, eps=eps) for rewards in per_tail.values())
    return total.clamp(-clip, clip)


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
