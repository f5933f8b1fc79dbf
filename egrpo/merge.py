"""E-GRPO's entropy-aware step merging (arXiv 2601.00423, Sec. 3).

A Gaussian step with per-dimension std sd has entropy h = d/2 * log(2*pi*e*sd^2). Low-entropy steps
are merged with the next l-1 steps into ONE Euler-Maruyama step sigma_i -> sigma_{i+l}; the adaptive
l is the smallest whose merged-step entropy reaches the threshold tau. The paper does not state the
scale tau lives on, so the reading is a parameter (default: the per-dimension entropy power exp(h/d);
docs/reference.md compares the readings).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, Sequence

if TYPE_CHECKING:  # torch at call time only: the method configs read Reading where torch may be absent
    import torch

    from .sde import Rule

Reading = Literal["entropy_power", "entropy_power_squared"]
READINGS: tuple[str, ...] = ("entropy_power", "entropy_power_squared")

_TWO_PI_E = 2.0 * math.pi * math.e


def step_entropy(
    sigmas: torch.Tensor, i: int, j: int, *, eta: float, rule: Rule = "flow_grpo",
    reading: Reading = "entropy_power",
) -> float:
    """Entropy of the (merged) step sigma_i -> sigma_j on the chosen scale.

    entropy_power: exp(h/d) = sqrt(2*pi*e) * sd; entropy_power_squared: exp(2h/d) = 2*pi*e*sd^2.
    """
    from .sde import transition_std

    sd = float(transition_std(sigmas, i, j, rule=rule, eta=eta))
    if reading == "entropy_power":
        return math.sqrt(_TWO_PI_E) * sd
    if reading == "entropy_power_squared":
        return _TWO_PI_E * sd**2
    raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")


def entropy_table(
    sigmas: torch.Tensor, max_len: int, *, eta: float, rule: Rule = "flow_grpo",
    reading: Reading = "entropy_power",
) -> torch.Tensor:
    """[T, max_len] table: entry (i, l-1) is the entropy of the merged step i -> i+l (NaN past the end).

    Column 0 is the per-step entropy; the entropy figure (paper Fig. 1b) plots the columns.
    """
    import torch

    num_steps = len(sigmas) - 1
    table = torch.full((num_steps, max_len), float("nan"), dtype=torch.float64)
    for i in range(num_steps):
        for length in range(1, min(max_len, num_steps - i) + 1):
            table[i, length - 1] = step_entropy(sigmas, i, i + length, eta=eta, rule=rule, reading=reading)
    return table


def merge_lengths(
    sigmas: torch.Tensor,
    active_steps: Sequence[int],
    *,
    tau: float,
    eta: float,
    reading: Reading = "entropy_power",
    fixed: int | None = None,
    rule: Rule = "flow_grpo",
    last: int | None = None,
) -> list[int]:
    """Merge length l_n for each active step n.

    Adaptive (fixed=None): the smallest l with entropy(n -> n+l) >= tau, or the longest allowed when
    none reaches it; tau == 0 means no merging (l = 1). Fixed: l = `fixed` for every step (Table 2's
    2/4/6-step rows). A merged step lands at step `last` at the latest (default T - 1: never on
    sigma = 0, so an ODE step always follows): l <= last - n.
    """
    num_steps = len(sigmas) - 1
    last = num_steps - 1 if last is None else last
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")
    if fixed is not None and fixed < 1:
        raise ValueError(f"fixed merge length must be >= 1, got {fixed}")
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    lengths = []
    for n in active_steps:
        if not 0 <= n < last:
            raise ValueError(f"active step {n} outside 0..{last - 1} (a merged step lands at step {last} at the latest)")
        longest = last - n
        if fixed is not None:
            lengths.append(min(fixed, longest))
            continue
        if tau == 0:
            lengths.append(1)
            continue
        length = next(
            (l for l in range(1, longest + 1)
             if step_entropy(sigmas, n, n + l, eta=eta, rule=rule, reading=reading) >= tau),
            longest,
        )
        lengths.append(length)
    return lengths
