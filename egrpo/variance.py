"""The quantity behind the paper's Fig. 1a: how much a single SDE step at step n spreads the reward.

From the deterministic anchor latent at each step n, G branches take one SDE step (unmerged, l = 1,
or E-GRPO's merged step n -> n + l_n) and finish by ODE; we record the reward's std over the G
branches, averaged over prompts. This reuses E-GRPO's plan and sampler unchanged.
"""

from __future__ import annotations

import pandas as pd
import torch

from .flux import FluxBackbone
from .plans import EGRPOPlan
from .rewards import Reward, score
from .rollout import sample_iteration


@torch.no_grad()
def reward_spread(backbone: FluxBackbone, prompts: list[str], reward: Reward, *, num_steps: int = 16,
                  shift: float = 3.0, eta: float = 0.7, tau: float = 2.2, group_size: int = 16,
                  height: int, width: int, seed: int = 0) -> pd.DataFrame:
    """Rows (step, merge, length, reward_std, reward_mean) for unmerged and merged one-step SDEs."""
    rows = []
    embeds = [(k, backbone.encode_prompts([p])) for k, p in enumerate(prompts)]
    for label, t in (("unmerged", 0.0), ("merged", tau)):
        plan = EGRPOPlan(num_steps, shift, group_size, eta, "all", t, granularities=(1,))
        lengths = plan.merge_lengths()
        groups = sample_iteration(backbone, plan.for_iteration(0), embeds, ("variance", seed), group_size,
                                  height, width)
        for n, length in enumerate(lengths):
            per_prompt = [g for g in groups if g.rollout.start == n]
            stds, means = [], []
            for g in per_prompt:
                r = score(reward, "reward", g.images[0], [prompts[g.prompt_id]] * group_size)
                stds.append(float(r.std()))
                means.append(float(r.mean()))
            rows.append({"step": n, "merge": label, "length": length,
                         "reward_std": sum(stds) / len(stds), "reward_mean": sum(means) / len(means)})
    return pd.DataFrame(rows)
