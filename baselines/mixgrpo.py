"""MixGRPO (Li et al. 2025) as a rollout plan: a sliding window of SDE steps, ODE elsewhere.

A window of `window_size` consecutive steps is sampled with Flow-GRPO noise (eta = 0.7) and trained;
all other steps are ODE. As the release's progressive strategy (fastvideo/utils/grpo_states.py,
overlap step 1, roll-back): the window starts at 0, moves by one step every `shift_every` iterations
(25; 20 for Flash) and never reaches index `max_timesteps` = T - 2 or later; its start wraps to 0
after T - 3, the last start with a non-empty window (the release wraps one later, into an empty
window whose update crashes). AdamW steps every `samples_per_update` = 3 of a group's 12 samples.

MixGRPO-Flash re-grids the steps after the window as the release's sampler does
(fastvideo/utils/sampling_utils.py): int(max((T - last) * 0.4, 1)) points from the unshifted time of
step last + 1 down to 0, time-shifted, i.e. one DPM-Solver++(2M) step fewer than points (at least
one: the release would then end short of sigma = 0), the first of them second order from the
window's data predictions, the last first order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from egrpo.methods import MethodConfig, MethodSpec, register
from egrpo.plans import IterationPlan, Rollout
from egrpo.schedule import shifted_sigmas, time_shift
from egrpo.transitions import DPM2, SDE, Transition, make_transitions


class MixGRPOMethod(MethodConfig):
    name: Literal["mixgrpo"] = "mixgrpo"
    num_steps: int = Field(25, ge=4)
    update: Literal["iteration", "rollout", "samples"] = "samples"
    samples_per_update: int | None = Field(3, ge=1, description="gradient_accumulation_steps of the release")
    window_size: int = Field(4, ge=1)
    shift_every: int = Field(25, ge=1, description="iterations per window position")
    max_timesteps: int | None = Field(None, ge=2, description="window indices stay below it (default T - 2)")
    shared_initial_noise: bool = True
    flash_fraction: float = Field(0.4, gt=0, le=1, description="Flash: dpm_post_compress_ratio")


class MixGRPOFlashMethod(MixGRPOMethod):
    name: Literal["mixgrpo_flash"] = "mixgrpo_flash"
    shift_every: int = Field(20, ge=1)


@dataclass(frozen=True)
class MixGRPOPlan:
    cfg: MixGRPOMethod

    @property
    def flash(self) -> bool:
        return self.cfg.name == "mixgrpo_flash"

    def window(self, iteration: int) -> tuple[int, ...]:
        c = self.cfg
        end = c.num_steps - 2 if c.max_timesteps is None else min(c.max_timesteps, c.num_steps)
        start = (iteration // c.shift_every) % end  # starts 0 .. end - 1: never an empty window
        return tuple(range(start, min(start + c.window_size, end)))

    def post_steps(self, last: int) -> int:
        """DPM steps after a window ending at step `last` (the release's points minus one, at least one)."""
        c = self.cfg
        points = int(max((c.num_steps - last) * c.flash_fraction, 1))
        return max(points - 1, 1)

    def for_iteration(self, iteration: int) -> IterationPlan:
        c = self.cfg
        sigmas = shifted_sigmas(c.num_steps, c.shift)
        window = self.window(iteration)
        sde = {i: SDE("flow_grpo", c.eta) for i in window}
        source = "shared_noise" if c.shared_initial_noise else "noise"
        key = f"window{window[0]}"
        if not self.flash:
            head = make_transitions(c.num_steps, sde)
            trainable = tuple(k for k, t in enumerate(head) if t.i in window)
            return IterationPlan(sigmas, (Rollout(key, 0, source, head, trainable),))
        # Flash: ODE up to the window, the SDE window, then a coarse DPM-Solver++ tail on a new grid
        import torch  # here, not at the top: the method's config is read where torch may be absent

        last = window[-1]
        n = self.post_steps(last)
        t_next = 1.0 - (last + 1) / c.num_steps  # unshifted time of step last + 1
        tail_t = torch.linspace(t_next, 0.0, n + 1, dtype=torch.float64)[1:]
        regrid = torch.cat([sigmas[: last + 2], time_shift(tail_t, c.shift).float()])
        head = make_transitions(last + 1, sde) + tuple(Transition(last + 1 + k, last + 2 + k, DPM2) for k in range(n))
        trainable = tuple(k for k, t in enumerate(head) if t.i in window)
        return IterationPlan(sigmas, (Rollout(key, 0, source, head, trainable, sigmas=regrid),))


register(MethodSpec("mixgrpo", MixGRPOMethod, MixGRPOPlan, "MixGRPO"))
register(MethodSpec("mixgrpo_flash", MixGRPOFlashMethod, MixGRPOPlan, "MixGRPO-Flash"))
