import math

import pytest
import torch

from egrpo.schedule import shifted_sigmas
from egrpo.sde import sde_step, transition_std

SIGMAS = shifted_sigmas(16, 3.0)


def _xv(seed=0, shape=(3, 8, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.mark.parametrize("rule,eta", [("flow_grpo", 0.7), ("dance_grpo", 0.3)])
@pytest.mark.parametrize("i,j", [(0, 1), (3, 4), (5, 8)])
def test_log_prob_is_normal_density_averaged(rule, eta, i, j):
    x, v = _xv()
    out = sde_step(x, v, SIGMAS, i, j, rule=rule, eta=eta, generator=torch.Generator().manual_seed(1))
    ref = torch.distributions.Normal(out.mean, out.std).log_prob(out.prev_sample).mean(dim=(1, 2))
    torch.testing.assert_close(out.log_prob, ref)
    assert out.log_prob.shape == (3,) and out.log_prob.dtype == torch.float32


@pytest.mark.parametrize("rule,eta", [("flow_grpo", 0.7), ("dance_grpo", 0.3)])
def test_monte_carlo_mean_and_std(rule, eta):
    x, v = _xv(shape=(1, 4, 2))
    xs, vs = x.expand(20000, 4, 2), v.expand(20000, 4, 2)
    out = sde_step(xs, vs, SIGMAS, 2, 4, rule=rule, eta=eta, generator=torch.Generator().manual_seed(0))
    emp_mean, emp_std = out.prev_sample.mean(0), out.prev_sample.std(0)
    assert torch.allclose(emp_mean, out.mean[0], atol=4 * float(out.std) / math.sqrt(20000) * 1.5)
    assert torch.allclose(emp_std, out.std.expand_as(emp_std), rtol=0.03)


def test_flow_grpo_formulas_golden():
    x, v = _xv()
    i, j = 4, 6
    sig, dt, a = float(SIGMAS[i]), float(SIGMAS[j] - SIGMAS[i]), 0.7
    std_t = a * math.sqrt(sig / (1 - sig))
    mean = x * (1 + std_t**2 / (2 * sig) * dt) + v * (1 + std_t**2 * (1 - sig) / (2 * sig)) * dt
    out = sde_step(x, v, SIGMAS, i, j, rule="flow_grpo", eta=a, noise=torch.zeros_like(x))
    torch.testing.assert_close(out.mean, mean)
    assert math.isclose(float(out.std), std_t * math.sqrt(-dt), rel_tol=1e-6)
    torch.testing.assert_close(out.prev_sample, mean)  # zero noise -> the mean


def test_flow_grpo_at_sigma_one_uses_sigmas1():
    expected = 0.7 * math.sqrt(1.0 / (1 - float(SIGMAS[1]))) * math.sqrt(float(SIGMAS[0] - SIGMAS[1]))
    got = float(transition_std(SIGMAS, 0, 1, rule="flow_grpo", eta=0.7))
    assert math.isfinite(got) and math.isclose(got, expected, rel_tol=1e-6)


def test_dance_grpo_formula_golden():
    x, v = _xv()
    sig, dt, eta = float(SIGMAS[3]), float(SIGMAS[4] - SIGMAS[3]), 0.3
    x0 = x - sig * v
    score = -(x - (1 - sig) * x0) / sig**2
    out = sde_step(x, v, SIGMAS, 3, rule="dance_grpo", eta=eta, noise=torch.zeros_like(x))
    torch.testing.assert_close(out.mean, x + dt * (v - 0.5 * eta**2 * score))
    assert math.isclose(float(out.std), eta * math.sqrt(-dt), rel_tol=1e-6)


@pytest.mark.parametrize("rule", ["flow_grpo", "dance_grpo"])
def test_eta_zero_is_the_ode_step(rule):
    x, v = _xv()
    ode = sde_step(x, v, SIGMAS, 5, 7, rule="ode", eta=0.0)
    out = sde_step(x, v, SIGMAS, 5, 7, rule=rule, eta=0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.prev_sample, x + (SIGMAS[7] - SIGMAS[5]) * v)
    torch.testing.assert_close(out.prev_sample, ode.prev_sample)
    assert float(out.std) == 0.0 and torch.all(out.log_prob == 0)


def test_ode_matches_diffusers_euler_step():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sched.set_timesteps(sigmas=SIGMAS[:-1].numpy().tolist())
    sched.set_begin_index(3)  # diffusers keeps a hidden step counter; start it at step 3
    x, v = _xv()
    ref = sched.step(v, sched.timesteps[3], x).prev_sample
    out = sde_step(x, v, SIGMAS, 3, rule="ode", eta=0.0)
    torch.testing.assert_close(out.prev_sample, ref)


@pytest.mark.parametrize("rule,eta", [("flow_grpo", 0.7), ("dance_grpo", 0.3)])
def test_rescoring_gives_ratio_one(rule, eta):
    x, v = _xv()
    first = sde_step(x, v, SIGMAS, 2, 5, rule=rule, eta=eta, generator=torch.Generator().manual_seed(3))
    again = sde_step(x, v, SIGMAS, 2, 5, rule=rule, eta=eta, prev_sample=first.prev_sample)
    ratio = torch.exp(again.log_prob - first.log_prob)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-6)
    torch.testing.assert_close(again.prev_sample, first.prev_sample)


def test_given_noise_is_used_and_prev_sample_scored():
    x, v = _xv()
    eps = torch.randn_like(x)
    out = sde_step(x, v, SIGMAS, 1, rule="flow_grpo", eta=0.7, noise=eps)
    torch.testing.assert_close(out.prev_sample, out.mean + out.std * eps)
    # a sample far from the mean scores lower
    far = sde_step(x, v, SIGMAS, 1, rule="flow_grpo", eta=0.7, prev_sample=out.prev_sample + 5 * out.std)
    assert torch.all(far.log_prob < out.log_prob)


def test_sum_reduction_and_bad_arguments():
    x, v = _xv()
    m = sde_step(x, v, SIGMAS, 1, rule="dance_grpo", eta=0.3, noise=torch.zeros_like(x))
    s = sde_step(x, v, SIGMAS, 1, rule="dance_grpo", eta=0.3, noise=torch.zeros_like(x), reduce="sum")
    torch.testing.assert_close(s.log_prob, m.log_prob * x[0].numel())
    with pytest.raises(ValueError, match="rule"):
        sde_step(x, v, SIGMAS, 1, rule="ddim", eta=0.3)
    with pytest.raises(ValueError, match="i=3, j=3"):
        sde_step(x, v, SIGMAS, 3, 3, rule="ode", eta=0.0)
    with pytest.raises(ValueError, match="j=17"):
        sde_step(x, v, SIGMAS, 15, 17, rule="ode", eta=0.0)


@pytest.mark.parametrize("rule,eta", [("flow_grpo", 0.7), ("dance_grpo", 0.3)])
def test_per_row_indices_match_scalar_steps(rule, eta):
    x, v = _xv(shape=(3, 8, 4))
    i, j = torch.tensor([0, 4, 9]), torch.tensor([1, 7, 10])
    eps = torch.randn_like(x)
    rows = sde_step(x, v, SIGMAS, i, j, rule=rule, eta=eta, noise=eps)
    for k in range(3):
        one = sde_step(x[k:k + 1], v[k:k + 1], SIGMAS, int(i[k]), int(j[k]), rule=rule, eta=eta, noise=eps[k:k + 1])
        torch.testing.assert_close(rows.prev_sample[k:k + 1], one.prev_sample)
        torch.testing.assert_close(rows.log_prob[k:k + 1], one.log_prob)
