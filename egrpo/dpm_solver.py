"""Multistep DPM-Solver++ (2M) for flow matching, written for MixGRPO-Flash's ODE tail.

Our own implementation of Lu et al. (2022), "DPM-Solver++", Sec. 4 (data-prediction, 2nd order
multistep) on the rectified-flow path x_sigma = (1 - sigma) x0 + sigma eps: alpha = 1 - sigma,
lambda = log(alpha / sigma), D = x0_hat = x - sigma * v. First order on the first step and on the
final step into sigma = 0 (diffusers' `lower_order_final`, as MixGRPO's sampler).
"""

from __future__ import annotations

import math

import torch


def dpm_solver_2m_step(
    x: torch.Tensor, x0: torch.Tensor, x0_prev: torch.Tensor | None,
    sigma_prev: float | None, sigma: float, sigma_next: float,
) -> torch.Tensor:
    """One step sigma -> sigma_next given x0_hat at sigma (and at the previous step, if any)."""
    if sigma_next <= 0.0:
        return x0  # alpha = 1, sigma = 0: the data prediction itself (first order at the end)

    def lam(s: float) -> float:
        return math.log((1.0 - s) / s)

    h = lam(sigma_next) - lam(sigma)
    d = x0
    if x0_prev is not None and sigma_prev is not None and sigma_prev < 1.0:
        r = (lam(sigma) - lam(sigma_prev)) / h
        d = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * x0_prev
    return (sigma_next / sigma) * x - (1.0 - sigma_next) * math.expm1(-h) * d
