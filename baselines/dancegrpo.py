"""DanceGRPO (Xue et al. 2025) as a rollout plan: every step SDE with constant noise.

G samples per prompt share one initial noise; all T steps use the DanceGRPO SDE (eta = 0.3); the
last step is never trained and each sample trains a random `train_fraction` of the remaining
T - 1 steps (int(0.6 * 15) = 9 for FLUX); the image scored is the data prediction at the last step
(the last step's noise is drawn but not decoded); AdamW steps every `samples_per_update` = 4 of a
group's 12 samples (3 steps an iteration), as fastvideo/train_grpo_flux.py and its 16-GPU script.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from egrpo.methods import MethodConfig, MethodSpec, register
from egrpo.plans import IterationPlan, Rollout
from egrpo.schedule import shifted_sigmas
from egrpo.transitions import SDE, make_transitions


class DanceGRPOMethod(MethodConfig):
    name: Literal["dancegrpo"] = "dancegrpo"
    eta: float = Field(0.3, gt=0, description="constant noise level")
    update: Literal["iteration", "rollout", "samples"] = "samples"
    samples_per_update: int | None = Field(4, ge=1, description="gradient_accumulation_steps of the 16-GPU script")
    train_fraction: float = Field(0.6, gt=0, le=1)
    drop_last: bool = True
    shared_initial_noise: bool = True
    decode: Literal["x0_hat", "sample"] = Field("x0_hat", description="score the data prediction at the last "
                                                 "step (the release) or the noisy last sample")


@dataclass(frozen=True)
class DanceGRPOPlan:
    cfg: DanceGRPOMethod

    @property
    def trainable(self) -> tuple[int, ...]:
        c = self.cfg
        return tuple(range(c.num_steps - 1 if c.drop_last else c.num_steps))

    @property
    def steps_per_sample(self) -> int:
        return max(1, int(len(self.trainable) * self.cfg.train_fraction))

    def for_iteration(self, iteration: int) -> IterationPlan:
        c = self.cfg
        head = make_transitions(c.num_steps, {i: SDE("dance_grpo", c.eta) for i in range(c.num_steps)})
        source = "shared_noise" if c.shared_initial_noise else "noise"
        rollout = Rollout("group", 0, source, head, trainable=self.trainable, train_per_row=self.steps_per_sample,
                          decode=c.decode)
        return IterationPlan(shifted_sigmas(c.num_steps, c.shift), (rollout,))


register(MethodSpec("dancegrpo", DanceGRPOMethod, DanceGRPOPlan, "DanceGRPO"))
