"""Flow-GRPO (Liu et al. 2025) as a rollout plan: every step SDE with Flow-GRPO noise, all trained
in order, each sample from its own initial noise. (The optional KL to the reference policy is not
implemented; the paper's comparisons use none.)"""

from __future__ import annotations

from dataclasses import dataclass

from egrpo.plans import IterationPlan, Rollout
from egrpo.sampler import SDE, make_transitions
from egrpo.schedule import shifted_sigmas


@dataclass(frozen=True)
class FlowGRPOPlan:
    num_steps: int = 16
    shift: float = 3.0
    group_size: int = 12
    eta: float = 0.7
    name: str = "flowgrpo"

    def for_iteration(self, iteration: int) -> IterationPlan:
        head = make_transitions(self.num_steps, {i: SDE("flow_grpo", self.eta) for i in range(self.num_steps)})
        rollout = Rollout("group", 0, "noise", head, trainable=tuple(range(self.num_steps)))
        return IterationPlan(shifted_sigmas(self.num_steps, self.shift), (rollout,))
