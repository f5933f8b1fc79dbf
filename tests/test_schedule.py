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
