"""Each method's plan against a re-derivation of its release's behaviour (docs/reference.md)."""

import pytest
import torch

from baselines.dancegrpo import DanceGRPOMethod, DanceGRPOPlan
from baselines.flowgrpo import FlowGRPOMethod, FlowGRPOPlan
from baselines.mixgrpo import MixGRPOFlashMethod, MixGRPOMethod, MixGRPOPlan
from egrpo.errors import ConfigError
from egrpo.methods import build_plan, registry
from egrpo.plans import EGRPOMethod, EGRPOPlan, active_steps, release_tail
from egrpo.rollout import GroupSample, Prompt, trained_rows


def egrpo(**kw) -> EGRPOPlan:
    return EGRPOPlan(EGRPOMethod(**kw))


def test_registry_builds_every_method_from_its_own_config():
    assert {"egrpo", "dancegrpo", "mixgrpo", "mixgrpo_flash", "flowgrpo", "g2rpo", "tempflow", "branchgrpo"} <= set(registry())
    for name, spec in registry().items():
        cfg = spec.config()
        assert cfg.name == name and isinstance(build_plan(cfg), spec.plan)
    assert MixGRPOFlashMethod().shift_every == 20 and MixGRPOMethod().shift_every == 25


def test_egrpo_trains_eight_merged_transitions_tau_2_2():
    plan = egrpo(num_steps=16, tau=2.2).for_iteration(0)
    assert plan.anchor is not None and all(not t.stochastic for t in plan.anchor) and len(plan.anchor) == 16
    heads = [(r.start, r.head[0].j - r.head[0].i) for r in plan.rollouts]
    assert heads == list(zip(range(8), [1, 1, 2, 2, 2, 3, 3, 3]))
    for r in plan.rollouts:
        assert r.source == "anchor" and r.trainable == (0,) and len(r.head) == 1
        assert r.head[0].stochastic and r.head[0].rule == "flow_grpo" and r.head[0].eta == 0.7
        n_l = r.head[0].j
        fine, coarse = (t.transitions for t in r.tails)
        # ODE tails resume at n + l (not n + 1, the authors' release defect), at stride 1 and 2
        assert fine[0].i == n_l and all(t.j - t.i == 1 for t in fine) and fine[-1].j == 16
        assert coarse[0].i == n_l and coarse[-1].j == 16
        assert not any(t.stochastic for t in fine + coarse)


def released_tail_points(num_steps: int, start: int, stride: int) -> list[int]:
    """The releases' stride-g ODE tail, re-derived from their code: the grid sigma[:s+1] +
    sigma[s+1::g] walked from the branch's position s up to the grid's second-to-last point; the
    image is the data prediction there (a final jump to sigma = 0)."""
    grid = list(range(num_steps + 1))
    grid = grid[:start + 1] + grid[start + 1::stride]
    return [grid[p] for p in range(start, len(grid) - 1)]


@pytest.mark.parametrize("num_steps", [16, 25])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_egrpo_tail_grid_is_the_releases(num_steps, stride):
    for start in range(1, num_steps):
        tail = release_tail(num_steps, start, stride)
        assert [t.i for t in tail] == released_tail_points(num_steps, start, stride)
        assert tail[-1].j == num_steps and all(a.j == b.i for a, b in zip(tail, tail[1:]))
    # spot values of the releases' grids (T = 16, g = 2): even starts end with x0_hat at 13, odd at 14
    if (num_steps, stride) == (16, 2):
        assert [t.i for t in release_tail(16, 1, 2)] == [1, 2, 4, 6, 8, 10, 12, 14]
        assert [t.i for t in release_tail(16, 2, 2)] == [2, 3, 5, 7, 9, 11, 13]


def test_uniform_tail_grid_stays_selectable():
    r = egrpo(tail_grid="uniform").for_iteration(0).rollouts[0]
    assert [t.i for t in r.tails[1].transitions] == [1, 3, 5, 7, 9, 11, 13, 15]


def test_merges_never_land_on_sigma_zero():
    """Table 3's second8 / all at tau 2.2: every branch ends with at least one ODE step, and the last
    step is never an active step (neither release can train it)."""
    for active in ("second8", "all"):
        plan = egrpo(active=active).for_iteration(0)
        assert all(r.head[0].j <= 15 for r in plan.rollouts)
        assert all(len(t.transitions) >= 1 for r in plan.rollouts for t in r.tails)
    assert active_steps("all", 16) == tuple(range(15)) and active_steps("second8", 16) == tuple(range(8, 15))
    with pytest.raises(ValueError, match="never stochastic"):
        EGRPOMethod(active=[3, 15])


def test_egrpo_fixed_merge_and_active_presets():
    plan = egrpo(fixed_merge=4, active="second8").for_iteration(0)
    assert [(r.start, r.head[0].j) for r in plan.rollouts] == [(n, min(n + 4, 15)) for n in range(8, 15)]
    assert active_steps("first4", 16) == (0, 1, 2, 3)
    with pytest.raises(ValueError):
        active_steps("middle", 16)


def _group(plan, slot=3):
    ip = plan.for_iteration(0)
    (r,) = ip.rollouts
    return GroupSample(r, 0, Prompt(slot, 0, "p", None), ip.sigmas, [], None, {})


def test_dancegrpo_all_sde_nine_of_fifteen_per_sample_scores_x0_hat():
    plan = DanceGRPOPlan(DanceGRPOMethod())
    (r,) = plan.for_iteration(0).rollouts
    assert r.source == "shared_noise" and len(r.head) == 16 and r.decode == "x0_hat"
    assert all(t.stochastic and t.rule == "dance_grpo" and t.eta == 0.3 for t in r.head)
    assert r.trainable == tuple(range(15)) and r.train_per_row == 9
    grp = _group(plan)
    rows = trained_rows(grp, ("k", 0), 12)
    per_row = {row: sorted(k for k, rs in rows.items() if row in rs) for row in range(12)}
    assert all(len(ks) == 9 and 15 not in ks for ks in per_row.values())
    assert len({tuple(ks) for ks in per_row.values()}) > 1  # a random subset per sample
    assert rows == trained_rows(grp, ("k", 0), 12)  # seeded


def released_window(iteration: int, num_steps: int = 25, size: int = 4, every: int = 25) -> list[int]:
    """grpo_states.py, re-derived: the start moves by one every `every` iterations, indices stay below
    max_timesteps = T - 2; the release rolls back once the start exceeds T - 2 (its start T - 2 gives
    an empty window, whose update crashes: we wrap one earlier)."""
    start = (iteration // every) % (num_steps - 2)
    return list(range(start, min(start + size, num_steps - 2)))


def test_mixgrpo_window_is_the_releases():
    plan = MixGRPOPlan(MixGRPOMethod())
    for it in range(0, 2000, 5):
        assert list(plan.window(it)) == released_window(it), it
    assert plan.window(22 * 25) == (22,) and plan.window(23 * 25) == (0, 1, 2, 3)  # never index 23 or 24
    (r,) = plan.for_iteration(50).rollouts
    assert [t.i for t in r.head if t.stochastic] == [2, 3, 4, 5] == [r.head[k].i for k in r.trainable]
    assert all(t.rule == "flow_grpo" and t.eta == 0.7 for t in r.head if t.stochastic)


def released_post_steps(last: int, num_steps: int = 25, ratio: float = 0.4) -> int:
    """sampling_utils.py: int(max((T - last) * ratio, 1)) linspace *points* after the window's last
    step, i.e. one DPM step fewer (the release would end short of sigma = 0 at one point)."""
    return max(int(max((num_steps - last) * ratio, 1)) - 1, 1)


def test_mixgrpo_flash_step_counts_are_the_releases():
    plan = MixGRPOPlan(MixGRPOFlashMethod())
    for it in range(0, 300):
        window = plan.window(it)
        (r,) = plan.for_iteration(it).rollouts
        dpm = [t for t in r.head if t.rule == "dpm_solver_2m"]
        assert len(dpm) == released_post_steps(window[-1]), it
        assert r.sigmas[-1] == 0 and torch.all(r.sigmas[1:] < r.sigmas[:-1])
        torch.testing.assert_close(r.sigmas[: window[-1] + 2], plan.for_iteration(it).sigmas[: window[-1] + 2])
    assert len([t for t in MixGRPOPlan(MixGRPOFlashMethod()).for_iteration(0).rollouts[0].head
                if t.rule == "dpm_solver_2m"]) == 7  # window 0..3: 8 points, 7 steps


def test_flowgrpo_trains_every_step():
    (r,) = FlowGRPOPlan(FlowGRPOMethod()).for_iteration(0).rollouts
    assert r.trainable == tuple(range(16)) and all(t.stochastic for t in r.head) and r.source == "noise"


def test_update_schedules_default_to_the_releases():
    assert EGRPOMethod().update == "rollout"  # one AdamW step per active step: 8 an iteration
    assert (DanceGRPOMethod().update, DanceGRPOMethod().samples_per_update) == ("samples", 4)  # 12 / 4 = 3 steps
    assert (MixGRPOMethod().update, MixGRPOMethod().samples_per_update) == ("samples", 3)  # 12 / 3 = 4 steps
    with pytest.raises(ValueError, match="samples_per_update"):
        EGRPOMethod(update="samples")
    with pytest.raises(ConfigError):
        build_plan(FlowGRPOMethod().model_copy(update={"name": "nope"}))
