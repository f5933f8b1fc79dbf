"""Flow-GRPO (Liu et al. 2025) as a rollout plan: every step SDE with Flow-GRPO noise, all trained
in order, each sample from its own initial noise. A harness extra, not in the E-GRPO paper's tables:
one AdamW step per iteration, no KL to the reference policy (the paper's comparisons use none)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from egrpo.methods import MethodConfig, MethodSpec, register
from egrpo.plans import IterationPlan, Rollout
from egrpo.schedule import shifted_sigmas
from egrpo.transitions import SDE, make_transitions


class FlowGRPOMethod(MethodConfig):
    name: Literal["flowgrpo"] = "flowgrpo"


@dataclass(frozen=True)
class FlowGRPOPlan:
    cfg: FlowGRPOMethod

    def for_iteration(self, iteration: int) -> IterationPlan:
        c = self.cfg
        head = make_transitions(c.num_steps, {i: SDE("flow_grpo", c.eta) for i in range(c.num_steps)})
        rollout = Rollout("group", 0, "noise", head, trainable=tuple(range(c.num_steps)))
        return IterationPlan(shifted_sigmas(c.num_steps, c.shift), (rollout,))


register(MethodSpec("flowgrpo", FlowGRPOMethod, FlowGRPOPlan, "Flow-GRPO"))
