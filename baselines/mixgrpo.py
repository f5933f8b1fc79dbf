"""MixGRPO (Li et al. 2025) as a rollout plan: a sliding window of SDE steps, ODE elsewhere.

A window of `window_size` consecutive steps is sampled with Flow-GRPO noise (eta = 0.7) and trained;
all other steps are ODE. The window starts at 0 and moves by one step every `shift_every`
iterations (25; 20 for Flash), wrapping back to 0 after the last allowed start (T - 2), as
fastvideo/utils/grpo_states.py's progressive strategy with overlap step 1 and roll-back.
MixGRPO-Flash re-grids the steps after the window to max(int(remaining * flash_fraction), 1)
steps, uniform in the unshifted time then time-shifted (our reading), solved with our
DPM-Solver++(2M) (`egrpo.dpm_solver`), first order at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from egrpo.plans import IterationPlan, Rollout
from egrpo.sampler import DPM2, SDE, Transition, make_transitions
from egrpo.schedule import shifted_sigmas, time_shift


@dataclass(frozen=True)
class MixGRPOPlan:
    num_steps: int = 25
    shift: float = 3.0
    group_size: int = 12
    eta: float = 0.7
    window_size: int = 4
    shift_every: int = 25
    max_start: int | None = None  # default T - 2
    shared_initial_noise: bool = True
    flash: bool = False
    flash_fraction: float = 0.4
    name: str = "mixgrpo"

    def window(self, iteration: int) -> tuple[int, ...]:
        last = self.num_steps - 2 if self.max_start is None else self.max_start
        start = (iteration // self.shift_every) % (last + 1)
        return tuple(range(start, min(start + self.window_size, self.num_steps)))

    def for_iteration(self, iteration: int) -> IterationPlan:
        sigmas = shifted_sigmas(self.num_steps, self.shift)
        window = self.window(iteration)
        sde = {i: SDE("flow_grpo", self.eta) for i in window}
        end = window[-1] + 1
        source = "shared_noise" if self.shared_initial_noise else "noise"
        if not self.flash or end >= self.num_steps:
            head = make_transitions(self.num_steps, sde)
            trainable = tuple(k for k, t in enumerate(head) if t.i in window)
            return IterationPlan(sigmas, (Rollout(f"window{window[0]}", 0, source, head, trainable),))
        # Flash: ODE up to the window, SDE window, then a coarse DPM-Solver++ tail on a new grid
        n_tail = max(int((self.num_steps - end) * self.flash_fraction), 1)
        t_end = 1.0 - end / self.num_steps  # unshifted time at the window's end
        tail_t = torch.linspace(t_end, 0.0, n_tail + 1, dtype=torch.float64)[1:]
        regrid = torch.cat([sigmas[: end + 1], time_shift(tail_t, self.shift).float()])
        head = make_transitions(end, sde) + tuple(Transition(end + k, end + k + 1, DPM2) for k in range(n_tail))
        trainable = tuple(k for k, t in enumerate(head) if t.i in window)
        return IterationPlan(sigmas, (Rollout(f"window{window[0]}", 0, source, head, trainable, sigmas=regrid),))
