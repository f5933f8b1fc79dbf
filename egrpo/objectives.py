"""GRPO objective math as free functions: group advantages (and a tree's, per depth), reward
aggregation, the PPO-clip loss."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable, Literal, Mapping

import torch

if TYPE_CHECKING:
    from .plans import NodeReward, Std
    from .transitions import Tree

Aggregation = Literal["normalise_each", "weight_then_normalise"]
Normaliser = Callable[[torch.Tensor], torch.Tensor]  # one reward's [G] -> advantages ([G] or [G, K])


def group_advantages(rewards: torch.Tensor, *, eps: float = 1e-8, std: Std = "unbiased") -> torch.Tensor:
    """(R - mean_G R) / (std_G R + eps). rewards: [G] -> [G].

    std: torch's default unbiased estimate, as DanceGRPO/MixGRPO/E-GRPO/G2RPO compute it, or the
    population std (numpy's default: flow_grpo's per-prompt stat tracker, TempFlow-GRPO with eps 1e-4).
    """
    if rewards.numel() < 2:
        raise ValueError("a group needs at least 2 samples to normalise advantages")
    spread = rewards.std() if std == "unbiased" else rewards.std(correction=0)
    return (rewards - rewards.mean()) / (spread + eps)


def tree_advantages(rewards: torch.Tensor, tree: "Tree", steps: int, *, node_reward: NodeReward = "mean",
                    log_probs: torch.Tensor | None = None, eps: float = 1e-8, min_std: float = 1e-6) -> torch.Tensor:
    """BranchGRPO's advantages of a tree's edges, [G] leaf rewards -> [G, K] (K = `steps` transitions).

    A node's reward is the mean of its leaves' (or, node_reward = prob_weighted, its children's
    rewards weighted by a softmax of their edges' log-probs, bottom-up); the nodes at one depth (after
    transition k) are normalised together (unbiased std + eps; all zero when there is one node or
    their std is below min_std), and the edge into a node takes that node's advantage: column k of
    row r is the advantage of r's node after transition k.
    """
    if node_reward == "prob_weighted" and log_probs is None:
        raise ValueError("probability-weighted node rewards need the edges' log-probs")
    node_r: dict[int, torch.Tensor] = {}
    for k in reversed(range(steps)):
        n = tree.nodes(k)
        if node_reward == "mean":
            node_r[k] = rewards.view(n, -1).mean(dim=1)
        elif k == steps - 1:
            node_r[k] = rewards[tree.first_rows(k)]
        else:  # children are the nodes after transition k + 1: a softmax over their edges where it splits
            children, b = node_r[k + 1], tree.nodes(k + 1) // n
            if b == 1:
                node_r[k] = children
            else:
                lp = log_probs[tree.first_rows(k + 1), k + 1].to(children)
                node_r[k] = (torch.softmax(lp.view(n, b), dim=1) * children.view(n, b)).sum(dim=1)
    out = torch.zeros(len(rewards), steps, dtype=rewards.dtype, device=rewards.device)
    for k in range(steps):
        r = node_r[k]
        if len(r) < 2:
            continue
        spread = r.std()
        if spread >= min_std:
            out[:, k] = ((r - r.mean()) / (spread + eps))[tree.node_of(k).to(r.device)]
    return out


def combine_advantages(rewards: Mapping[str, torch.Tensor], weights: Mapping[str, float], mode: Aggregation, *,
                       eps: float = 1e-8, std: Std = "unbiased", normalise: Normaliser | None = None) -> torch.Tensor:
    """One unclamped advantage per sample of a group from several rewards ([G] each).

    normalise_each: sum_k w_k * A(R_k) (G2RPO, MixGRPO); weight_then_normalise: A(sum_k w_k R_k)
    (the E-GRPO authors' refactor, 0.7 HPS + 0.3 CLIP). A is `normalise` (a tree's, per depth) or
    the group normalisation.
    """
    norm = normalise or partial(group_advantages, eps=eps, std=std)
    if mode == "normalise_each":
        return sum(weights[k] * norm(r) for k, r in rewards.items())
    if mode == "weight_then_normalise":
        return norm(sum(weights[k] * r for k, r in rewards.items()))
    raise ValueError(f"unknown aggregation {mode!r}")


def rollout_advantages(per_tail: Mapping[str, Mapping[str, torch.Tensor]], weights: Mapping[str, float],
                       mode: Aggregation, *, clip: float = 5.0, eps: float = 1e-8, std: Std = "unbiased",
                       normalise: Normaliser | None = None) -> torch.Tensor:
    """A group's advantages ([G], or [G, K] from a tree): each tail's (E-GRPO's ODE granularities)
    rewards combined and normalised within the group, summed over tails, and the sum clamped to
    +-clip, as every reference clamps after summing (over granularities and over rewards)."""
    total = sum(combine_advantages(rewards, weights, mode, eps=eps, std=std, normalise=normalise)
                for rewards in per_tail.values())
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
