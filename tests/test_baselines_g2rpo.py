"""GranularGRPO as E-GRPO's plan with merge length 1, against its release (bcmi/Granular-GRPO,
fastvideo/train_g2rpo_hps.py): the transitions it samples and trains, its grid and its schedule."""

import pytest

from baselines.g2rpo import G2RPOMethod
from egrpo.methods import build_plan, method_spec
from egrpo.plans import EGRPOMethod, EGRPOPlan


def released_points(num_steps: int, eta_step: int, g: int) -> list[int]:
    """run_ode_sample_step's evaluated points after the SDE step at eta_step, re-derived: the grid
    sigma[:eta_step+2] + sigma[eta_step+2::g], walked from index eta_step+1 to len - 2."""
    grid = list(range(num_steps + 1))
    grid = grid[:eta_step + 2] + grid[eta_step + 2::g]
    return [grid[p] for p in range(eta_step + 1, len(grid) - 1)]


def test_registered_on_egrpos_plan():
    spec = method_spec("g2rpo")
    assert spec.plan is EGRPOPlan and spec.display == "GranularGRPO"
    assert isinstance(build_plan(G2RPOMethod()), EGRPOPlan)
    with pytest.raises(ValueError):
        G2RPOMethod(fixed_merge=2)  # a merge would make it E-GRPO


def test_one_sde_step_per_active_step_then_the_releases_grids():
    ip = build_plan(G2RPOMethod()).for_iteration(0)
    assert ip.anchor is not None and not any(t.stochastic for t in ip.anchor) and len(ip.anchor) == 16
    assert [r.start for r in ip.rollouts] == list(range(8))  # eta_step_list 0..7
    for n, r in enumerate(ip.rollouts):
        (head,) = r.head
        assert (head.i, head.j, head.rule, head.eta) == (n, n + 1, "flow_grpo", 0.7)
        assert r.source == "anchor" and r.trainable == (0,) and not r.splits  # each row forwarded, as the release
        for tail, g in zip(r.tails, (1, 2)):
            assert [t.i for t in tail.transitions] == released_points(16, n, g)
            assert tail.transitions[-1].j == 16 and not any(t.stochastic for t in tail.transitions)


def test_egrpo_without_merging_is_granulargrpo():
    """E-GRPO's Table 4 row tau = 0 (no merging) samples and trains exactly G2RPO's plan: the entropy
    merge is the only difference between the two methods."""
    g2rpo = build_plan(G2RPOMethod()).for_iteration(0)
    assert EGRPOPlan(EGRPOMethod(tau=0)).for_iteration(0).rollouts == g2rpo.rollouts
    merged = EGRPOPlan(EGRPOMethod()).for_iteration(0).rollouts
    assert [r.head[0].j - r.head[0].i for r in merged] != [1] * 8


def test_an_adamw_step_per_active_step_and_the_releases_settings():
    c = G2RPOMethod()
    assert (c.update, c.num_steps, c.group_size, c.eta, c.shift, c.active, c.granularities) == \
        ("rollout", 16, 12, 0.7, 3.0, "first8", [1, 2])
