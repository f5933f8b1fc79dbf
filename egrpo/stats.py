"""Paired, resolution-aware statistics for the tables: is A better than B, and is that resolved?

Runs trained with the same seed see the same training prompts in the same order, and every model is
evaluated on the same test prompts with the same evaluation seeds. A comparison therefore pairs A and
B by seed and by prompt: d[s, p] = score_A(seed s, prompt p) - score_B(seed s, prompt p), and the
estimate is mean(d). Seeds and prompts are crossed random factors, so its variance is
Var = s2_seed / S + s2_prompt / P + s2_rest / (S P), which the two-way random-effects ANOVA of d
estimates (conservatively) as (MS_seed + MS_prompt) / (S P). The 95% half-width scales each mean
square by its own t quantile (S - 1 and P - 1 degrees of freedom) and adds them in quadrature:
sqrt(t_{S-1}^2 MS_seed + t_{P-1}^2 MS_prompt) / sqrt(S P). With two seeds the seed part has one
degree of freedom: wide, and honest. A bootstrap over two seeds, or Satterthwaite's pooled degrees
of freedom, covers about 89% instead of 95% there; this interval covers 95-99% for 1 to 6 seeds
(tests/test_stats.py). With one seed the seed variation cannot be estimated; the interval then
covers prompts only, and the tables say so.

A claim "A > B" gets one of three verdicts: holds (resolved) when the interval lies above 0,
reversed (resolved) when it lies below 0, else not resolved, with the bound |delta| < x that the
interval does establish.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def per_prompt(df: "pd.DataFrame", metrics: Sequence[str]) -> "pd.DataFrame":
    """Each prompt's mean score over its samples, indexed by prompt_index (the unit every statistic
    resamples: a prompt's samples share its prompt and are not independent evidence)."""
    if "sample" not in df:  # a one-sample table written before samples were counted
        return df.set_index("prompt_index")[list(metrics)].sort_index()
    counts = df.groupby("prompt_index")["sample"].nunique()
    if counts.nunique() != 1:
        raise ValueError(f"prompts have different numbers of samples ({sorted(set(counts))}): not comparable")
    return df.groupby("prompt_index")[list(metrics)].mean().sort_index()


def _t_interval(mean: float, var: float, df: float, alpha: float) -> tuple[float, float, float]:
    from scipy import stats

    half = float(stats.t.ppf(1 - alpha / 2, df)) * math.sqrt(max(var, 0.0)) if df > 0 else math.inf
    return mean, mean - half, mean + half


def crossed_interval(d: np.ndarray, *, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, lo, hi) of mean(d) for paired differences d [seeds, prompts] (see the module docstring)."""
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"need a [seeds, prompts] array with at least two prompts, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("paired differences must be finite")
    n_s, n_p = d.shape
    q = 1 - alpha / 2
    ms_p = n_s * d.mean(0).var(ddof=1)  # prompts' mean square
    part = stats.t.ppf(q, n_p - 1) ** 2 * ms_p
    if n_s > 1:  # one seed: its variation is not estimable, the interval covers prompts only
        part += stats.t.ppf(q, n_s - 1) ** 2 * n_p * d.mean(1).var(ddof=1)  # seeds' mean square
    half = math.sqrt(part / (n_s * n_p))
    mean = float(d.mean())
    return mean, mean - half, mean + half


def mean_squares(d: np.ndarray) -> tuple[float, float, float]:
    """Two-way ANOVA mean squares (seeds, prompts, residual) of paired differences d [seeds, prompts]."""
    d = np.asarray(d, dtype=np.float64)
    n_s, n_p = d.shape
    rest = d - d.mean(0) - d.mean(1)[:, None] + d.mean()
    return (n_p * d.mean(1).var(ddof=1), n_s * d.mean(0).var(ddof=1),
            float((rest**2).sum()) / ((n_s - 1) * (n_p - 1)))


def _components(d: np.ndarray) -> tuple[int, float, float, float]:
    """(prompts, residual mean square, seed variance, prompt variance) of d [seeds, prompts]: method
    of moments, negative components set to 0."""
    n_s, n_p = np.shape(d)
    if n_s < 2:
        raise ValueError("the seed variance needs at least two seeds, measured and projected")
    ms_s, ms_p, ms_e = mean_squares(d)
    return n_p, ms_e, max(ms_s - ms_e, 0.0) / n_p, max(ms_p - ms_e, 0.0) / n_s


def _projected(components: tuple[int, float, float, float], seeds: int, alpha: float,
               prompts: int | None = None) -> float:
    from scipy import stats

    n_p, ms_e, var_seed, var_prompt = components
    n_p = prompts or n_p  # the components are per seed and per prompt: they carry over to another count
    if seeds < 2:
        raise ValueError("the seed variance needs at least two seeds, measured and projected")
    if n_p < 2:
        raise ValueError(f"a projection needs at least two test prompts, got {n_p}")
    q = 1 - alpha / 2
    part = (stats.t.ppf(q, seeds - 1) ** 2 * (ms_e + n_p * var_seed)
            + stats.t.ppf(q, n_p - 1) ** 2 * (ms_e + seeds * var_prompt))
    return math.sqrt(part / (seeds * n_p))


def projected_half_width(d: np.ndarray, seeds: int, *, prompts: int | None = None, alpha: float = 0.05) -> float:
    """The half-width crossed_interval is expected to give with `seeds` training seeds and `prompts` test
    prompts (default: d's own) drawn like d's, from d's variance components: the budget a claim needs,
    chosen from the variance rather than from the outcome."""
    return _projected(_components(d), seeds, alpha, prompts)


def seeds_for(d: np.ndarray, half_width: float, *, prompts: int | None = None, limit: int = 1024,
              alpha: float = 0.05) -> int | None:
    """The fewest training seeds whose projected half-width (on `prompts` test prompts, default d's) is
    below `half_width` (None: one seed measured, a target <= 0, or more than `limit` seeds). The
    projection falls with every added seed, so a bisection finds it."""
    if np.shape(d)[0] < 2 or half_width <= 0:
        return None
    comp = _components(d)
    below = lambda seeds: _projected(comp, seeds, alpha, prompts) < half_width  # noqa: E731
    if not below(limit):
        return None
    lo, hi = 1, limit  # below(hi) holds; below(lo) does not (1 seed: no interval)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if below(mid) else (mid, hi)
    return hi


def seeds_to_resolve(d: np.ndarray, **kw) -> int | None:
    """The fewest training seeds whose projected interval would exclude 0 if the mean difference
    stayed at its estimate (None: one seed measured, a zero estimate, or more than `limit`)."""
    return seeds_for(d, abs(float(np.mean(d))), **kw)


def seed_interval(units_a: Sequence[np.ndarray], units_b: Sequence[np.ndarray], *, alpha: float = 0.05
                  ) -> tuple[float, float, float]:
    """(mean, lo, hi) of the mean over seeds of mean(units_a[s]) - mean(units_b[s]): paired by seed
    only (A and B saw different prompts, as at equal compute). A t-interval over the per-seed
    differences, whose spread holds each run's own sampling noise; with one seed, Welch's interval
    of that seed's two runs."""
    if len(units_a) != len(units_b) or not units_a:
        raise ValueError("need the same, non-zero number of seeds on both sides")
    a = [np.asarray(u, dtype=np.float64) for u in units_a]
    b = [np.asarray(u, dtype=np.float64) for u in units_b]
    diffs = np.array([x.mean() - y.mean() for x, y in zip(a, b)])
    if len(diffs) > 1:
        return _t_interval(float(diffs.mean()), diffs.var(ddof=1) / len(diffs), len(diffs) - 1, alpha)
    (x,), (y,) = a, b
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1)) if va + vb > 0 else math.inf
    return _t_interval(float(diffs[0]), va + vb, df, alpha)


@dataclass(frozen=True)
class Comparison:
    """The paired estimate of A - B for the claim A > B, with its 95% interval."""

    a: str
    b: str
    delta: float
    lo: float
    hi: float
    differences: np.ndarray | None = field(default=None, repr=False, compare=False)  # d [seeds, prompts]

    @property
    def seeds_to_resolve(self) -> int | None:
        """Projected from the differences' variance components (paired claims only)."""
        return None if self.differences is None else seeds_to_resolve(self.differences)

    @property
    def resolved(self) -> bool:
        return self.lo > 0 or self.hi < 0

    @property
    def bound(self) -> float:
        """The largest |A - B| the interval admits."""
        return max(abs(self.lo), abs(self.hi))

    @property
    def verdict(self) -> str:
        if self.lo > 0:
            return "holds (resolved)"
        if self.hi < 0:
            return "reversed (resolved)"
        return f"not resolved (|Δ| < {_num(self.bound)} at 95%)"

    def cell(self) -> str:
        return f"{_num(self.delta, True)} [{_num(self.lo, True)}, {_num(self.hi, True)}]"


def _num(x: float, sign: bool = False) -> str:
    """Four decimals, or three significant digits for smaller magnitudes (never a bare 0.0000)."""
    text = f"{x:+.4f}" if sign else f"{x:.4f}"
    return text if abs(x) >= 1e-3 or x == 0 else (f"{x:+.3g}" if sign else f"{x:.3g}")


def compare(a: str, b: str, scores_a: np.ndarray, scores_b: np.ndarray, **kw) -> Comparison:
    """Paired comparison of two [seeds, prompts] score arrays (B may be [1, prompts]: a base model
    evaluated once, broadcast over A's seeds)."""
    scores_a, scores_b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if scores_b.shape[0] == 1 and scores_a.shape[0] > 1:
        scores_b = np.broadcast_to(scores_b, scores_a.shape)
    if scores_a.shape != scores_b.shape:
        raise ValueError(f"{a} and {b} are not paired: shapes {scores_a.shape} and {scores_b.shape}")
    d = scores_a - scores_b
    return Comparison(a, b, *crossed_interval(d, **kw), differences=d)


def chain_verdict(comparisons: Sequence[Comparison]) -> str:
    """Verdict of an ordering claim A > B > C ... from its adjacent comparisons."""
    if all(c.lo > 0 for c in comparisons):
        return "holds (resolved)"
    reversed_ = [c for c in comparisons if c.hi < 0]
    if reversed_:
        return "does not hold (resolved: " + ", ".join(f"{c.a} < {c.b}" for c in reversed_) + ")"
    open_ = [c for c in comparisons if not c.resolved]
    return "not resolved (" + ", ".join(f"{c.a} vs {c.b}: |Δ| < {_num(c.bound)}" for c in open_) + " at 95%)"
