"""DanceGRPO (Xue et al. 2025) as a rollout plan: every step SDE with constant noise.

G samples per prompt share one initial noise; all T steps use the DanceGRPO SDE (eta = 0.3); the
last step is never trained and each sample trains a random `train_fraction` of the remaining
T - 1 steps (int(0.6 * 15) = 9 for FLUX), as fastvideo/train_grpo_flux.py does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from egrpo.plans import IterationPlan, Rollout
from egrpo.sampler import SDE, make_transitions
from egrpo.schedule import shifted_sigmas


@dataclass(frozen=True)
class DanceGRPOPlan:
    num_steps: int = 16
    shift: float = 3.0
    group_size: int = 12
    eta: float = 0.3
    train_fraction: float = 0.6
    drop_last: bool = True
    shared_initial_noise: bool = True
    name: str = "dancegrpo"

    @property
    def trainable(self) -> tuple[int, ...]:
        return tuple(range(self.num_steps - 1 if self.drop_last else self.num_steps))

    @property
    def steps_per_sample(self) -> int:
        return max(1, int(len(self.trainable) * self.train_fraction))

    def for_iteration(self, iteration: int) -> IterationPlan:
        head = make_transitions(self.num_steps, {i: SDE("dance_grpo", self.eta) for i in range(self.num_steps)})
        source = "shared_noise" if self.shared_initial_noise else "noise"
        rollout = Rollout("group", 0, source, head, trainable=self.trainable, train_per_row=self.steps_per_sample)
        return IterationPlan(shifted_sigmas(self.num_steps, self.shift), (rollout,))
