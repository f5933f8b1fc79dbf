"""GranularGRPO (G2RPO, arXiv 2510.01982) as a rollout plan: E-GRPO's plan with
every merge length 1, so E-GRPO is exactly G2RPO plus the entropy-guided merge.

From a deterministic ODE anchor, each of the first 8 of 16 steps gets G = 12 branches that take ONE
SDE step (Flow-GRPO noise 0.7) from the anchor latent and finish by ODE at granularities 1 and 2 (the
release's grid: one stride-1 step, then stride g, the data prediction at the second-to-last point);
each granularity's rewards are normalised within the 12 branches of the step, summed, and the sum
clamped to +-5; an AdamW step per active step (8 an iteration); the logged training reward is the
anchor image's (bcmi/Granular-GRPO fastvideo/train_g2rpo_hps.py; docs/reference.md, "GranularGRPO").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from egrpo.methods import MethodSpec, register
from egrpo.plans import EGRPOMethod, EGRPOPlan


class G2RPOMethod(EGRPOMethod):
    """E-GRPO's fields with the merge fixed at one step (tau and reading then play no part)."""

    name: Literal["g2rpo"] = "g2rpo"
    fixed_merge: Literal[1] = Field(1, description="one SDE step per active step: no merge")


register(MethodSpec("g2rpo", G2RPOMethod, EGRPOPlan, "GranularGRPO"))
