"""TempFlow-GRPO (arXiv 2508.04324) as a rollout plan: branches off an ODE
trajectory at every step, each step's loss weighted by its noise level.

A deterministic ODE anchor per prompt; at each step k of the first int(0.99 T) (all but the last,
whose branches land on sigma = 0), G = 6 branches take one SDE step (Flow-GRPO noise 0.7) from the
anchor latent, drawn from the anchor's own forward at k (the rows are a tree rooted on the anchor:
no extra pass), then ODE to sigma = 0 and are decoded. Each step's 6 branches are one advantage
group, normalised with the population std + 1e-4 (flow_grpo's per-prompt stat tracker, one
(prompt, seed) group); the trained transition's loss is weighted by 1.73 x its std. AdamW steps
every 3 of a group's 6 samples: 2 an iteration, each over half the rows at every step, as the
release's gradient accumulation over half its 24 rows per GPU (Shredded-Pork/TempFlow-GRPO
scripts/train_flux_pr.py; docs/reference.md, "TempFlow-GRPO"). Not reproduced: the release's KL
term (beta 0.004 against the adapter-free model), its EMA and LoRA; the harness fine-tunes fully
and, as the E-GRPO paper for every method, uses no KL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from egrpo.methods import MethodConfig, MethodSpec, register
from egrpo.plans import IterationPlan, Rollout, Std, Tail
from egrpo.schedule import flux_dynamic_shift, shifted_sigmas
from egrpo.transitions import Transition, make_transitions


class TempFlowMethod(MethodConfig):
    name: Literal["tempflow"] = "tempflow"
    num_steps: int = Field(10, ge=2, description="the release's T = 10")
    shift: float = Field(default_factory=lambda: flux_dynamic_shift(720, 720), gt=0,
                         description="FLUX's dynamic shift, as the release samples: 2.2243 at 720x720 (3.16 at its 1024x1024)")
    group_size: int = Field(6, ge=2, description="branches per step (the release's exploration_k)")
    update: Literal["iteration", "rollout", "samples"] = "samples"
    samples_per_update: int | None = Field(3, ge=1, description="half of each group per AdamW step: 2 an iteration")
    timestep_fraction: float = Field(0.99, gt=0, le=1, description="branch and train the first int(f T) steps "
                                     "(never the last, which lands on sigma = 0)")
    noise_weight: float | None = Field(1.73, gt=0, description="loss weight c x std of the trained step; None: unweighted")
    advantage_std: Std = Field("population", description="flow_grpo's stat tracker: numpy's population std")
    advantage_eps: float = Field(1e-4, gt=0)


@dataclass(frozen=True)
class TempFlowPlan:
    cfg: TempFlowMethod

    def branch_steps(self) -> tuple[int, ...]:
        c = self.cfg
        return tuple(range(max(1, min(int(c.num_steps * c.timestep_fraction), c.num_steps - 1))))

    def for_iteration(self, iteration: int) -> IterationPlan:
        c = self.cfg
        rollouts = tuple(
            Rollout(f"step{k}", k, "anchor", (Transition(k, k + 1, "flow_grpo", c.eta),), trainable=(0,),
                    tails=(Tail("ode", make_transitions(c.num_steps, start=k + 1)),),
                    splits=((0, c.group_size),), advantage_std=c.advantage_std, advantage_eps=c.advantage_eps,
                    noise_weight=c.noise_weight)
            for k in self.branch_steps())
        return IterationPlan(shifted_sigmas(c.num_steps, c.shift), rollouts, anchor=make_transitions(c.num_steps))


register(MethodSpec("tempflow", TempFlowMethod, TempFlowPlan, "TempFlow-GRPO"))
