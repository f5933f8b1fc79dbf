import pytest
import torch

from egrpo.dpm_solver import dpm_solver_2m_step
from egrpo.objectives import clipped_ratio_loss, combine_advantages, group_advantages


def test_group_advantages_normalise_and_clamp():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0])
    a = group_advantages(r)
    torch.testing.assert_close(a, (r - 2.5) / (r.std() + 1e-8))
    big = torch.tensor([0.0] * 99 + [1.0])
    assert group_advantages(big).max() == 5.0
    assert torch.all(group_advantages(torch.ones(4)) == 0)  # equal rewards -> no signal, no NaN


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
