import pytest
import torch

from egrpo.dpm_solver import dpm_solver_2m_step
from egrpo.objectives import clipped_ratio_loss, combine_advantages, group_advantages, rollout_advantages


def test_group_advantages_normalise():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0])
    a = group_advantages(r)
    torch.testing.assert_close(a, (r - 2.5) / (r.std() + 1e-8))
    assert torch.all(group_advantages(torch.ones(4)) == 0)  # equal rewards -> no signal, no NaN


def _reference_advantages(per_tail: dict, weights: dict, clip: float = 5.0) -> torch.Tensor:
    """The releases' order, re-derived: normalise each (tail, reward) within the group, weight, sum over
    rewards and over granularities, then clamp the sum once (G2RPO train_one_step, VisualGRPO's loss,
    MixGRPO's merged advantage)."""
    total = torch.zeros_like(next(iter(next(iter(per_tail.values())).values())))
    for rewards in per_tail.values():
        for name, r in rewards.items():
            total = total + weights[name] * (r - r.mean()) / (r.std() + 1e-8)
    return total.clamp(-clip, clip)


def test_the_summed_advantage_is_clamped_not_each_term():
    outlier = torch.tensor([0.0] * 11 + [1.0])  # one outlier in a group of 12: each term is 3.18
    two_tails = {"stride1": {"hps": outlier}, "stride2": {"hps": outlier}}
    a = rollout_advantages(two_tails, {"hps": 1.0}, "normalise_each")
    assert a.max() == 5.0 and float(group_advantages(outlier).max()) * 2 > 6.3  # clamping each term gave 6.35
    torch.testing.assert_close(a, _reference_advantages(two_tails, {"hps": 1.0}))
    hps_clip = {"stride1": {"hps": outlier, "clip": outlier}, "stride2": {"hps": outlier, "clip": outlier}}
    b = rollout_advantages(hps_clip, {"hps": 1.0, "clip": 1.0}, "normalise_each")
    assert b.max() == 5.0  # per-term clamping reached 12.7
    torch.testing.assert_close(b, _reference_advantages(hps_clip, {"hps": 1.0, "clip": 1.0}))
    small = {"final": {"hps": torch.tensor([0.1, 0.3, 0.2, 0.4])}}
    torch.testing.assert_close(rollout_advantages(small, {"hps": 1.0}, "normalise_each"),
                               group_advantages(small["final"]["hps"]))


def test_two_aggregation_modes_differ_and_match_definitions():
    hps = torch.tensor([0.30, 0.31, 0.32, 0.29])
    clip = torch.tensor([0.20, 0.40, 0.10, 0.30])
    w = {"hps": 0.7, "clip": 0.3}
    each = combine_advantages({"hps": hps, "clip": clip}, w, "normalise_each")
    torch.testing.assert_close(each, 0.7 * group_advantages(hps) + 0.3 * group_advantages(clip))
    weighted = combine_advantages({"hps": hps, "clip": clip}, w, "weight_then_normalise")
    torch.testing.assert_close(weighted, group_advantages(0.7 * hps + 0.3 * clip))
    assert not torch.allclose(each, weighted)


def test_ppo_clip_loss():
    old = torch.zeros(4)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    new = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5]))
    loss, ratio, clipped = clipped_ratio_loss(new, old, adv, 0.2)
    # positive advantage: ratio capped at 1.2 from above; negative: at 0.8 from below (pessimistic)
    torch.testing.assert_close(loss, torch.tensor([-1.2, -0.5, 1.5, 0.8]))
    assert clipped.tolist() == [True, True, True, True]
    loss1, ratio1, clipped1 = clipped_ratio_loss(old, old, adv, 1e-4)
    assert torch.all(ratio1 == 1) and not clipped1.any()


def test_dpm_solver_exact_on_constant_x0():
    # If the model's data prediction is exact and constant, DPM-Solver++ lands on the flow path.
    x0, eps = torch.randn(3), torch.randn(3)
    sig = [0.8, 0.6, 0.3, 0.0]
    x = (1 - sig[0]) * x0 + sig[0] * eps
    prev = None
    for k in range(3):
        x = dpm_solver_2m_step(x, x0, x0 if prev else None, prev, sig[k], sig[k + 1])
        prev = sig[k]
        torch.testing.assert_close(x, (1 - sig[k + 1]) * x0 + sig[k + 1] * eps)
