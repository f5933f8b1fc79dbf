import pytest
import torch

from baselines.dancegrpo import DanceGRPOPlan
from baselines.flowgrpo import FlowGRPOPlan
from baselines.mixgrpo import MixGRPOPlan
from egrpo.plans import EGRPOPlan, active_steps
from egrpo.rollout import GroupSample, trained_rows


def test_egrpo_trains_eight_merged_transitions_tau_2_2():
    plan = EGRPOPlan(num_steps=16, tau=2.2).for_iteration(0)
    assert plan.anchor is not None and all(not t.stochastic for t in plan.anchor) and len(plan.anchor) == 16
    heads = [(r.start, r.head[0].j - r.head[0].i) for r in plan.rollouts]
    assert heads == list(zip(range(8), [1, 1, 2, 2, 2, 3, 3, 3]))
    for r in plan.rollouts:
        assert r.source == "anchor" and r.trainable == (0,) and len(r.head) == 1
        assert r.head[0].stochastic and r.head[0].rule == "flow_grpo" and r.head[0].eta == 0.7
        n_l = r.head[0].j
        # ODE tails resume at n + l (not n + 1, the authors' release defect), at stride 1 and 2
        (fine, coarse) = r.tails
        assert fine[0].i == n_l and all(t.j - t.i == 1 for t in fine) and fine[-1].j == 16
        assert coarse[0].i == n_l and all(t.j - t.i <= 2 for t in coarse) and coarse[-1].j == 16
        assert not any(t.stochastic for t in fine + coarse)


def test_egrpo_fixed_merge_and_active_presets():
    plan = EGRPOPlan(fixed_merge=4, active="second8").for_iteration(0)
    assert [(r.start, r.head[0].j) for r in plan.rollouts] == [(n, min(n + 4, 16)) for n in range(8, 16)]
    assert active_steps("first4", 16) == (0, 1, 2, 3)
    assert active_steps("all", 16) == tuple(range(16))
    with pytest.raises(ValueError):
        active_steps("middle", 16)


def test_dancegrpo_all_sde_nine_of_fifteen_per_sample():
    plan = DanceGRPOPlan()
    ip = plan.for_iteration(0)
    (r,) = ip.rollouts
    assert r.source == "shared_noise" and len(r.head) == 16
    assert all(t.stochastic and t.rule == "dance_grpo" and t.eta == 0.3 for t in r.head)
    assert r.trainable == tuple(range(15)) and r.train_per_row == 9
    grp = GroupSample(r, ip.sigmas, prompt_id=3, embeds=None, latents=[], log_probs=None, images=[])
    rows = trained_rows(grp, ("k", 0), 12)
    per_row = {row: sorted(k for k, rs in rows.items() if row in rs) for row in range(12)}
    assert all(len(ks) == 9 and 15 not in ks for ks in per_row.values())
    assert len({tuple(ks) for ks in per_row.values()}) > 1  # a random subset per sample
    assert rows == trained_rows(grp, ("k", 0), 12)  # seeded


def test_mixgrpo_window_moves_every_25_and_wraps():
    plan = MixGRPOPlan()
    assert plan.window(0) == (0, 1, 2, 3) and plan.window(24) == (0, 1, 2, 3)
    assert plan.window(25) == (1, 2, 3, 4) and plan.window(50) == (2, 3, 4, 5)
    assert plan.window(23 * 25) == (23, 24)  # last allowed start T - 2
    assert plan.window(24 * 25) == (0, 1, 2, 3)  # wraps
    (r,) = plan.for_iteration(50).rollouts
    assert [t.i for t in r.head if t.stochastic] == [2, 3, 4, 5]
    assert [r.head[k].i for k in r.trainable] == [2, 3, 4, 5]
    assert all(t.rule == "flow_grpo" and t.eta == 0.7 for t in r.head if t.stochastic)


def test_mixgrpo_flash_regrids_after_window():
    (r,) = MixGRPOPlan(flash=True, shift_every=20).for_iteration(40).rollouts  # window 2..5
    after = [t for t in r.head if t.i >= 6]
    assert len(after) == max(int((25 - 6) * 0.4), 1) == 7
    assert all(t.rule == "dpm_solver_2m" for t in after)
    base = MixGRPOPlan().for_iteration(40).sigmas
    torch.testing.assert_close(r.sigmas[:7], base[:7])  # trained steps keep their sigmas
    assert r.sigmas[-1] == 0 and torch.all(r.sigmas[1:] < r.sigmas[:-1])


def test_flowgrpo_trains_every_step():
    (r,) = FlowGRPOPlan().for_iteration(0).rollouts
    assert r.trainable == tuple(range(16)) and all(t.stochastic for t in r.head) and r.source == "noise"
