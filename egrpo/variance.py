"""The quantity behind the paper's Fig. 1a: how much a single SDE step at step n spreads the reward.

From the deterministic anchor latent at each step n, G branches take one SDE step (unmerged, l = 1,
or E-GRPO's merged step n -> n + l_n) and finish by ODE; we record the reward's std over the G
branches, averaged over prompts. This reuses E-GRPO's plan and sampler unchanged, one prompt at a
time with at most `max_batch` rows per forward, images scored and released per prompt.
What `egrpo variance` reads is egrpo.protocol's VarianceSpec.
"""

from __future__ import annotations

import pandas as pd
import torch

from .flux import FluxBackbone
from .plans import EGRPOMethod, EGRPOPlan
from .progress import Progress
from .rewards import Reward, score
from .rollout import Prompt, sample_iteration


@torch.no_grad()
def reward_spread(backbone: FluxBackbone, prompts: list[str], reward: Reward, method: EGRPOMethod, *,
                  group_size: int, height: int, width: int, seed: int = 0, max_batch: int | None = None,
                  reward_batch: int = 32) -> pd.DataFrame:
    """Rows (step, merge, length, reward_std, reward_mean) for unmerged and merged one-step SDEs at
    every step a branch can start from, under E-GRPO's schedule, noise level and merge rule."""
    rows = []
    bar = Progress("variance", 2 * len(prompts), unit="prompt")  # a line per prompt of each pass
    for label, tau in (("unmerged", 0.0), ("merged", method.tau)):
        cfg = method.model_copy(update={"active": "all", "tau": tau, "granularities": [1], "group_size": group_size})
        plan = EGRPOPlan(cfg)
        stats: dict[int, list[tuple[float, float]]] = {}
        for k, text in enumerate(prompts):
            prompt = Prompt(k, k, text, backbone.encode_prompts([text]))
            sample = sample_iteration(backbone, plan.for_iteration(0), [prompt], ("variance", seed), group_size,
                                      height, width, max_batch)
            for g in sample.groups:
                (images,) = g.images.values()  # one tail: ODE stride 1
                r = score(reward, "reward", images, [text] * group_size, batch=reward_batch)
                stats.setdefault(g.rollout.start, []).append((float(r.std()), float(r.mean())))
            del sample
            bar.step(branches=label)
        for n, length in zip(plan.active_steps(), plan.merge_lengths()):
            std, mean = zip(*stats[n])
            rows.append({"step": n, "merge": label, "length": length,
                         "reward_std": sum(std) / len(std), "reward_mean": sum(mean) / len(mean)})
    return pd.DataFrame(rows)
