"""One stochastic (or deterministic) flow-matching transition sigma_i -> sigma_j, with its log-prob.

A pure function in the spirit of flow_grpo's `sde_step_with_logprob` (which adapts ddpo-pytorch's
DDIM step to flow matching): it samples x' when `prev_sample` is None and scores a given x'
otherwise, computes in fp32 (bf16 can overflow in the Gaussian), and holds no scheduler state.
Steps are integer indices into `sigmas`; j > i + 1 is E-GRPO's merged Euler-Maruyama step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

Rule = Literal["flow_grpo", "dance_grpo", "ode"]
RULES: tuple[str, ...] = ("flow_grpo", "dance_grpo", "ode")

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class StepResult:
    """x' and the transition's Gaussian N(mean, std^2); log_prob is [B] fp32, averaged over dims."""

    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


Index = int | torch.Tensor  # a step index, or one per batch row (LongTensor [B])


def _at(sigmas: torch.Tensor, k: Index, ndim: int) -> torch.Tensor:
    """sigmas[k] in fp64: a 0-dim tensor for an int, [B, 1, ...] (broadcastable to x) for a row index."""
    s = sigmas.double()[k]
    return s if s.ndim == 0 else s.view(-1, *([1] * (ndim - 1)))


def flow_grpo_std_t(sigmas: torch.Tensor, i: Index, eta: float, ndim: int = 1) -> torch.Tensor:
    """Flow-GRPO's noise scale a*sqrt(sigma/(1-sigma)); at sigma == 1 the denominator uses sigmas[1]."""
    sigma = _at(sigmas, i, ndim)
    denom_sigma = torch.where(sigma >= 1.0, sigmas[1].double(), sigma)
    return eta * torch.sqrt(sigma / (1.0 - denom_sigma))


def transition_std(sigmas: torch.Tensor, i: Index, j: Index, *, rule: Rule, eta: float,
                   ndim: int = 1) -> torch.Tensor:
    """Per-dimension std of the transition sigma_i -> sigma_j (fp64); 0 for the ODE.

    0-dim for int indices; [B, 1, ...] with `ndim` dims for per-row index tensors.
    """
    _check(sigmas, i, j, rule, eta)
    neg_dt = _at(sigmas, i, ndim) - _at(sigmas, j, ndim)
    if rule == "ode" or eta == 0:
        return torch.zeros_like(neg_dt)
    if rule == "flow_grpo":
        return flow_grpo_std_t(sigmas, i, eta, ndim) * torch.sqrt(neg_dt)
    return eta * torch.sqrt(neg_dt)  # dance_grpo: constant noise level


def transition_mean(
    x: torch.Tensor, v: torch.Tensor, sigmas: torch.Tensor, i: Index, j: Index, *, rule: Rule, eta: float
) -> torch.Tensor:
    """Mean of x' given x and velocity v (fp32). Formulas: docs/reference.md, "The stochastic step"."""
    x, v = x.float(), v.float()
    sigma = _at(sigmas, i, x.ndim)
    dt = (_at(sigmas, j, x.ndim) - sigma).float()  # < 0
    if rule == "ode" or eta == 0:
        return x + dt * v
    if rule == "flow_grpo":
        std_t2 = flow_grpo_std_t(sigmas, i, eta, x.ndim) ** 2
        a = (1.0 + std_t2 / (2.0 * sigma) * dt).float()
        b = (1.0 + std_t2 * (1.0 - sigma) / (2.0 * sigma)).float()
        return x * a + v * b * dt
    # dance_grpo: Euler-Maruyama with the score of the flow, score = -(x - (1-sigma) x0_hat) / sigma^2
    sigma = sigma.float()
    x0_hat = x - sigma * v
    score = -(x - (1.0 - sigma) * x0_hat) / sigma**2
    return x + dt * (v - 0.5 * eta**2 * score)


def gaussian_log_prob(
    sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduce: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    """Full Gaussian log-density per batch row (constants included), reduced over non-batch dims.

    The reference code AVERAGES over latent dimensions; that scale is what the PPO clip range sees.
    """
    sample, mean = sample.float(), mean.float()
    std = std.to(torch.float32)
    lp = -((sample - mean) ** 2) / (2.0 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    dims = tuple(range(1, lp.ndim))
    return lp.mean(dim=dims) if reduce == "mean" else lp.sum(dim=dims)


def sde_step(
    x: torch.Tensor,
    v: torch.Tensor,
    sigmas: torch.Tensor,
    i: Index,
    j: Index | None = None,
    *,
    rule: Rule,
    eta: float,
    noise: torch.Tensor | None = None,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduce: Literal["mean", "sum"] = "mean",
) -> StepResult:
    """One transition sigmas[i] -> sigmas[j] (j defaults to i+1; i, j may be per-row LongTensors).

    Samples x' = mean + std * eps (eps = `noise`, or drawn from `generator`) unless `prev_sample`
    is given, in which case that sample is scored. For the ODE rule (or eta == 0) the transition
    is a Dirac: std is 0, x' is the mean, and log_prob is defined as 0 (it contributes a factor 1
    to any likelihood ratio; deterministic transitions are never trained).
    """
    j = i + 1 if j is None else j
    _check(sigmas, i, j, rule, eta)
    mean = transition_mean(x, v, sigmas, i, j, rule=rule, eta=eta)
    std = transition_std(sigmas, i, j, rule=rule, eta=eta, ndim=x.ndim).to(torch.float32)
    batch = x.shape[0]
    if rule == "ode" or eta == 0:
        out = mean if prev_sample is None else prev_sample.float()
        return StepResult(out, torch.zeros(batch, dtype=torch.float32, device=x.device), mean, std)
    if prev_sample is None:
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32, device=mean.device)
        prev_sample = mean + std * noise.float()
    log_prob = gaussian_log_prob(prev_sample.detach(), mean, std, reduce)
    return StepResult(prev_sample.float(), log_prob, mean, std)


def _check(sigmas: torch.Tensor, i: Index, j: Index, rule: str, eta: float) -> None:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    ti, tj = torch.as_tensor(i), torch.as_tensor(j)
    if not (bool((0 <= ti).all()) and bool((ti < tj).all()) and bool((tj < len(sigmas)).all())):
        raise ValueError(f"need 0 <= i < j <= {len(sigmas) - 1}, got i={i}, j={j}")
