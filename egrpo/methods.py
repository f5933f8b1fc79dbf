"""Method name -> rollout plan, from the validated method config."""

from __future__ import annotations

from .plans import EGRPOPlan, RolloutPlan


def build_plan(m) -> RolloutPlan:
    """The one place that maps a method config onto its plan (E-GRPO here, baselines in baselines/)."""
    if m.name == "egrpo":
        active = m.active if isinstance(m.active, str) else tuple(m.active)
        return EGRPOPlan(m.num_steps, m.shift, m.group_size, m.eta, active, m.tau, m.reading,
                         m.fixed_merge, tuple(m.granularities))
    if m.name == "dancegrpo":
        from baselines.dancegrpo import DanceGRPOPlan

        return DanceGRPOPlan(m.num_steps, m.shift, m.group_size, m.eta, m.train_fraction, m.drop_last,
                             m.shared_initial_noise)
    if m.name in ("mixgrpo", "mixgrpo_flash"):
        from baselines.mixgrpo import MixGRPOPlan

        flash = m.name == "mixgrpo_flash"
        every = m.shift_every or (20 if flash else 25)
        return MixGRPOPlan(m.num_steps, m.shift, m.group_size, m.eta, m.window_size, every, m.max_start,
                           m.shared_initial_noise, flash, m.flash_fraction, m.name)
    if m.name == "flowgrpo":
        from baselines.flowgrpo import FlowGRPOPlan

        return FlowGRPOPlan(m.num_steps, m.shift, m.group_size, m.eta)
    raise ValueError(f"unknown method {m.name!r}")
