import torch

from egrpo.schedule import quantized_timestep, shifted_sigmas


def test_shifted_sigmas_endpoints_and_monotone():
    s = shifted_sigmas(16, 3.0)
    assert s.shape == (17,)
    assert s[0] == 1.0 and s[-1] == 0.0
    assert torch.all(s[1:] < s[:-1])


def test_shift_formula_golden():
    # t = 0.5, s = 3: 1.5 / 2 = 0.75; t = 0.25: 0.75 / 1.5 = 0.5
    s = shifted_sigmas(4, 3.0)
    torch.testing.assert_close(s, torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]))


def test_shift_one_is_linear():
    torch.testing.assert_close(shifted_sigmas(10, 1.0), torch.linspace(1, 0, 11))


def test_quantized_timestep_truncates_like_reference():
    assert quantized_timestep(torch.tensor(0.9999)) == torch.tensor(0.999)
    assert quantized_timestep(torch.tensor(0.5)) == torch.tensor(0.5)


def _reference_timesteps(num_steps: int, shift: float) -> list[int]:
    """The references' expression, re-derived: sigmas built in float32 (torch.linspace + time shift),
    then int(sigma * 1000) on each 0-dim float32 tensor (DanceGRPO, MixGRPO, VisualGRPO, G2RPO)."""
    t = torch.linspace(1, 0, num_steps + 1)
    sigmas = shift * t / (1 + (shift - 1) * t)
    return [int(s * 1000) for s in sigmas]


def test_quantized_timestep_matches_the_references_at_t16_and_t25():
    for steps in (16, 25):
        ours = (quantized_timestep(shifted_sigmas(steps, 3.0)) * 1000).round().long().tolist()
        assert ours == _reference_timesteps(steps, 3.0), steps
    # the two steps where flooring the float64 product gave 899 and 699
    ours = (quantized_timestep(shifted_sigmas(16, 3.0)) * 1000).round().long().tolist()
    assert ours[4] == 900 and ours[9] == 700
