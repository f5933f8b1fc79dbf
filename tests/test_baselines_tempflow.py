"""TempFlow-GRPO's plan against its release (Shredded-Pork/TempFlow-GRPO: scripts/train_flux_pr.py,
flow_grpo/diffusers_patch/*_perstep.py): branches off the ODE trajectory at every step, the
noise-level loss weight, per-step population-std groups and the update schedule."""

import math

import numpy as np
import torch

from baselines.tempflow import TempFlowMethod, TempFlowPlan
from egrpo.cost import StandInBackbone, stand_in_embeds
from egrpo.rollout import Prompt, group_advantages_of, sample_iteration, train_units
from egrpo.schedule import flux_dynamic_shift


def released_sigmas(steps: int, resolution: int) -> np.ndarray:
    """pipeline_with_logprob's schedule: linspace(1, 1/N, N), FLUX's exponential shift with mu from
    the image tokens (calculate_shift), then the scheduler's final 0."""
    tokens = (resolution // 16) ** 2
    mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * (tokens - 256)
    s = np.linspace(1.0, 1.0 / steps, steps)
    return np.append(math.exp(mu) / (math.exp(mu) + (1 / s - 1)), 0.0)


def test_dynamic_shift_is_the_releases_schedule():
    for res in (720, 1024):
        plan = TempFlowPlan(TempFlowMethod(shift=flux_dynamic_shift(res, res)))
        torch.testing.assert_close(plan.for_iteration(0).sigmas.double(), torch.from_numpy(released_sigmas(10, res)),
                                   atol=1e-6, rtol=0)
    assert TempFlowMethod().shift == flux_dynamic_shift(720, 720) and round(TempFlowMethod().shift, 4) == 2.2243


def test_branches_at_every_trained_step_off_the_ode_trajectory():
    ip = TempFlowPlan(TempFlowMethod()).for_iteration(0)
    assert not any(t.stochastic for t in ip.anchor) and len(ip.anchor) == 10
    assert [r.start for r in ip.rollouts] == list(range(9))  # int(10 x 0.99): the last step is never trained
    for k, r in enumerate(ip.rollouts):
        (head,) = r.head
        assert (head.i, head.j, head.rule, head.eta) == (k, k + 1, "flow_grpo", 0.7) and r.trainable == (0,)
        (tail,) = r.tails  # the plain ODE (Euler) to sigma = 0, decoded
        assert [(t.i, t.j) for t in tail.transitions] == [(i, i + 1) for i in range(k + 1, 10)]
        assert r.source == "anchor" and r.splits == ((0, 6),)  # one node: the anchor's own forward
        assert (r.advantage_std, r.advantage_eps, r.noise_weight) == ("population", 1e-4, 1.73)


def _iteration(cfg=None, prompts=2):
    cfg = cfg or TempFlowMethod()
    bb = StandInBackbone(4, 2, velocity=lambda x, s: 0.5 * x - s)
    plan = TempFlowPlan(cfg).for_iteration(0)
    slots = [Prompt(k, 0, "", stand_in_embeds()) for k in range(prompts)]
    return bb, plan, sample_iteration(bb, plan, slots, ("tf", 0), cfg.group_size, 16, 16)


def test_the_branches_take_no_forward_of_their_own():
    """The release draws the 6 branch samples of step i from the ODE trajectory's forward at i: 10
    anchor rows and 6 x (9 + 8 + ... + 1) tail rows per prompt, nothing for the heads."""
    bb, plan, sample = _iteration()
    assert bb.passes == 2 * (10 + 6 * 45)
    group = sample.groups[3]
    assert torch.all(group.latents[0] == group.latents[0][:1])  # every branch from the anchor latent
    assert torch.unique(group.latents[1], dim=0).shape[0] == 6  # six distinct branch samples


def test_noise_level_weight_population_std_and_two_updates():
    _, plan, sample = _iteration()
    weights = {}
    for g in sample.groups:
        g.rewards = {"ode": {"r": torch.randn(6, generator=torch.Generator().manual_seed(g.index), dtype=torch.float64)}}
        a = group_advantages_of(g, {"r": 1.0}, "normalise_each", 5.0)
        r = g.rewards["ode"]["r"].numpy()
        torch.testing.assert_close(a, torch.from_numpy((r - r.mean()) / (r.std() + 1e-4)))  # numpy's std
        g.advantages = a
        for u in train_units(g, ("tf", 0), 12, TempFlowMethod()):
            weights[g.rollout.start] = u.weight
            assert u.x.shape[0] == 1 and u.index.tolist() == [0] * 3  # 3 branches off one anchor latent
            assert u.update == (0 if u.advantages.tolist() == a[:3].tolist() else 1)  # rows 0-2, then 3-5
    # the release's weight: 1.73 x std_dev_t x sqrt(sigma_i - sigma_i+1), std_dev_t = 0.7 sqrt(s / (1 - s))
    s = released_sigmas(10, 720)
    std_t = 0.7 * np.sqrt(s[:9] / (1 - np.where(s[:9] == 1, s[1], s[:9])))
    expected = 1.73 * std_t * np.sqrt(s[:9] - s[1:10])
    np.testing.assert_allclose([weights[k] for k in range(9)], expected, rtol=1e-3)


def test_weighted_loss_rows():
    from egrpo.rollout import TrainUnit, unit_loss

    lp = torch.tensor([0.1, -0.2, 0.0])
    u = TrainUnit(0, None, 0, 1, "flow_grpo", 0.7, None, None, None, None, torch.zeros(3),
                  torch.tensor([1.0, -1.0, 0.5]), weight=0.8)
    from egrpo.objectives import clipped_ratio_loss

    plain, _, _ = clipped_ratio_loss(lp, torch.zeros(3), u.advantages, 1e-4)
    weighted, _, _ = unit_loss(u, lp, 1e-4)
    torch.testing.assert_close(weighted, 0.8 * plain)  # the release: -1.73 std A ratio, PPO-clipped
