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

A claim "A > B" gets one of three verdicts: holds (resolved) when its decision interval lies above
0, reversed (resolved) when it lies below 0, else not resolved, with the bound |delta| < x that the
interval does establish. The claims of one table are decided together (holm): each decision interval
is at the level Holm's step-down procedure tests the claim at, so that the chance of any false
"resolved" in a table stays under 5% however many claims it makes; the 95% interval is printed
beside it. The intervals' mean squares are cross-checked against statsmodels' ANOVA, the seed-paired
intervals come from scipy.stats (tests/test_stats.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
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


ALPHA = 0.05  # each interval's own level; a table's claims are decided at levels adjusted from it (holm)


def t_quantile(alpha: float, df: float) -> float:
    """The two-sided t quantile t_df(1 - alpha/2), accurate at the small levels a family's adjustment uses."""
    from scipy import special

    return float(-special.stdtrit(df, alpha / 2))


@dataclass(frozen=True)
class Spread:
    """What a comparison's interval is made of, so that it can be re-formed at another level or seed count.

    Paired differences d [seeds S, prompts P]: their two-way ANOVA mean squares. The estimate's variance
    is estimated by a seeds' term ms_seed / (S P) on S - 1 degrees of freedom plus a prompts' term
    ms_prompt / (S P) on P - 1. A seed-paired claim (prompts None) has the seeds' term only, ms_seed the
    variance of its per-seed differences; a one-seed claim the prompts' term only (with a two-sample
    interval's own degrees of freedom in df_prompt). ms_rest, the seed-by-prompt residual, splits the
    prompts' term for projections; 0 where unknown: the prompts' term then does not shrink with more
    seeds, the conservative reading."""

    seeds: int
    prompts: int | None
    ms_seed: float | None
    ms_prompt: float | None
    ms_rest: float = 0.0
    df_prompt: float | None = None

    @property
    def terms(self) -> list[tuple[float, float]]:
        """(variance, degrees of freedom) of each part of the estimate's estimated variance."""
        n = self.seeds * (self.prompts or 1)
        out = [] if self.ms_seed is None else [(self.ms_seed / n, self.seeds - 1)]
        if self.ms_prompt is not None:
            out.append((self.ms_prompt / n, self.prompts - 1 if self.df_prompt is None else self.df_prompt))
        return out

    @property
    def variance(self) -> float:
        """The estimate's variance under the two-way model (moment estimates, negative components 0):
        s2_seed / S + s2_prompt / P + s2_rest / (S P); the interval's terms count s2_rest twice."""
        if self.prompts is None or self.ms_seed is None:
            return sum(v for v, _ in self.terms)
        s, p, e = self.seeds, self.prompts, self.ms_rest
        return max(self.ms_seed - e, 0.0) / (s * p) + max(self.ms_prompt - e, 0.0) / (s * p) + e / (s * p)

    def half_width(self, alpha: float = ALPHA) -> float:
        """sqrt(sum of t_df(1 - alpha/2)^2 x variance) over the terms (docs/statistics.md)."""
        return math.hypot(*(t_quantile(alpha, df) * math.sqrt(v) for v, df in self.terms))  # no overflow at tiny levels

    def p_value(self, delta: float) -> float:
        """The level at which the interval around delta just reaches 0: the interval at any level above it
        excludes 0 (two-sided; 1 for delta = 0; 0 below 1e-200)."""
        from scipy.optimize import brentq

        if delta == 0:
            return 1.0
        gap = lambda x: self.half_width(10.0**x) - abs(delta)  # noqa: E731  (falls as the level x rises)
        if gap(-200) <= 0:
            return 0.0
        return float(10.0 ** brentq(gap, -200, 0, xtol=1e-12))

    def project(self, seeds: int, prompts: int | None = None) -> "Spread":
        """The spread expected with `seeds` training seeds and `prompts` test prompts (default: the measured
        count) drawn like these: the variance components per seed and per prompt carry over (method of
        moments, negative components set to 0)."""
        if self.ms_seed is None or self.seeds < 2 or seeds < 2:
            raise ValueError("the seed variance needs at least two seeds, measured and projected")
        if self.prompts is None:  # seed-paired: one term, the per-seed differences' variance
            if prompts is not None:
                raise ValueError("a seed-paired comparison has no test-prompt term to project")
            return Spread(seeds, None, self.ms_seed, None)
        n_p = prompts or self.prompts
        if n_p < 2:
            raise ValueError(f"a projection needs at least two test prompts, got {n_p}")
        e = self.ms_rest
        var_seed = max(self.ms_seed - e, 0.0) / self.prompts
        var_prompt = max(self.ms_prompt - e, 0.0) / self.seeds
        return Spread(seeds, n_p, e + n_p * var_seed, e + seeds * var_prompt, e)


def crossed_spread(d: np.ndarray) -> Spread:
    """The spread of mean(d) for paired differences d [seeds, prompts] (see the module docstring)."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"need a [seeds, prompts] array with at least two prompts, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("paired differences must be finite")
    n_s, n_p = d.shape
    if n_s == 1:  # one seed: its variation is not estimable, the interval covers prompts only
        return Spread(1, n_p, None, float(d[0].var(ddof=1)))
    return Spread(n_s, n_p, *mean_squares(d))


def crossed_interval(d: np.ndarray, *, alpha: float = ALPHA) -> tuple[float, float, float]:
    """(mean, lo, hi) of mean(d) for paired differences d [seeds, prompts] (see the module docstring)."""
    half = crossed_spread(d).half_width(alpha)
    mean = float(np.mean(d))
    return mean, mean - half, mean + half


def mean_squares(d: np.ndarray) -> tuple[float, float, float]:
    """Two-way ANOVA mean squares (seeds, prompts, residual) of paired differences d [seeds, prompts]."""
    d = np.asarray(d, dtype=np.float64)
    n_s, n_p = d.shape
    rest = d - d.mean(0) - d.mean(1)[:, None] + d.mean()
    return (float(n_p * d.mean(1).var(ddof=1)), float(n_s * d.mean(0).var(ddof=1)),
            float((rest**2).sum()) / ((n_s - 1) * (n_p - 1)))


def projected_half_width(d: np.ndarray, seeds: int, *, prompts: int | None = None, alpha: float = ALPHA) -> float:
    """The half-width crossed_interval is expected to give with `seeds` training seeds and `prompts` test
    prompts (default: d's own) drawn like d's, from d's variance components: the budget a claim needs,
    chosen from the variance rather than from the outcome."""
    return crossed_spread(d).project(seeds, prompts).half_width(alpha)


def seeds_for(d: np.ndarray, half_width: float, *, prompts: int | None = None, limit: int = 1024,
              alpha: float = ALPHA) -> int | None:
    """The fewest training seeds whose projected half-width (on `prompts` test prompts, default d's) is
    below `half_width` (None: one seed measured, a target <= 0, or more than `limit` seeds). The
    projection falls with every added seed, so a bisection finds it."""
    if np.shape(d)[0] < 2 or half_width <= 0:
        return None
    spread = crossed_spread(d)
    return fewest_seeds(lambda seeds: spread.project(seeds, prompts).half_width(alpha) < half_width, limit)


def fewest_seeds(enough, limit: int = 1024) -> int | None:
    """The fewest seeds n in [2, limit] with enough(n), for a test that stays true once true (None if
    enough(limit) fails): a bisection."""
    if not enough(limit):
        return None
    lo, hi = 1, limit  # enough(hi) holds; one seed never does (no interval)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def seeds_to_resolve(d: np.ndarray, **kw) -> int | None:
    """The fewest training seeds whose projected interval would exclude 0 if the mean difference
    stayed at its estimate (None: one seed measured, a zero estimate, or more than `limit`)."""
    return seeds_for(d, abs(float(np.mean(d))), **kw)


def _seed_parts(units_a: Sequence[np.ndarray], units_b: Sequence[np.ndarray], alpha: float
                ) -> tuple[float, float, float, Spread]:
    from scipy import stats

    if len(units_a) != len(units_b) or not units_a:
        raise ValueError("need the same, non-zero number of seeds on both sides")
    a = [np.asarray(u, dtype=np.float64) for u in units_a]
    b = [np.asarray(u, dtype=np.float64) for u in units_b]
    diffs = np.array([x.mean() - y.mean() for x, y in zip(a, b)])
    mean = float(diffs.mean())
    if len(diffs) > 1:
        spread = Spread(len(diffs), None, float(diffs.var(ddof=1)), None)
        if spread.ms_seed == 0:  # scipy's t statistic is undefined here; the interval is the point
            return mean, mean, mean, spread
        ci = stats.ttest_1samp(diffs, 0.0).confidence_interval(1 - alpha)
    else:
        (x,), (y,) = a, b
        res = stats.ttest_ind(x, y, equal_var=False)
        spread = Spread(1, None, None, x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y), df_prompt=float(res.df))
        ci = res.confidence_interval(1 - alpha)
    return mean, float(ci.low), float(ci.high), spread


def seed_interval(units_a: Sequence[np.ndarray], units_b: Sequence[np.ndarray], *, alpha: float = ALPHA
                  ) -> tuple[float, float, float]:
    """(mean, lo, hi) of the mean over seeds of mean(units_a[s]) - mean(units_b[s]): paired by seed
    only (A and B saw different prompts, as at equal compute). scipy's one-sample t-interval over the
    per-seed differences, whose spread holds each run's own sampling noise; with one seed, Welch's
    interval of that seed's two runs."""
    return _seed_parts(units_a, units_b, alpha)[:3]


def compare_seeds(a: str, b: str, units_a: Sequence[np.ndarray], units_b: Sequence[np.ndarray]) -> "Comparison":
    """The claim a > b paired by seed only (seed_interval), with its spread."""
    delta, lo, hi, spread = _seed_parts(units_a, units_b, ALPHA)
    return Comparison(a, b, delta, lo, hi, spread=spread)


@dataclass(frozen=True)
class Comparison:
    """The estimate of A - B for the claim A > B: its 95% interval (lo, hi) and the interval its verdict
    is decided on, at `level` (the Holm step of its family's claims it was tested at; 95% alone)."""

    a: str
    b: str
    delta: float
    lo: float
    hi: float
    differences: np.ndarray | None = field(default=None, repr=False, compare=False)  # d [seeds, prompts]
    spread: Spread | None = field(default=None, repr=False, compare=False)
    family: int = 1  # claims decided together (its table's); 1 until holm() decides it with them
    level: float = ALPHA
    p_holm: float | None = None  # Holm-adjusted p-value within the family

    @property
    def seeds_to_resolve(self) -> int | None:
        """The fewest seeds whose projected 95% interval excludes 0 if Δ stays at its estimate, from the
        variance components (paired claims with two or more seeds and Δ != 0; seeds_to_resolve)."""
        sp = self.spread
        if sp is None or sp.prompts is None or sp.ms_seed is None or self.delta == 0:
            return None
        return fewest_seeds(lambda seeds: sp.project(seeds).half_width() < abs(self.delta))

    @property
    def p_value(self) -> float:
        """The unadjusted level at which the interval just reaches 0 (Spread.p_value)."""
        if self.spread is None:
            raise ValueError(f"{self.a} vs {self.b}: no spread recorded, so no p-value")
        return self.spread.p_value(self.delta)

    @property
    def adjusted(self) -> tuple[float, float]:
        """The interval at the claim's decision level; the 95% one for a claim decided alone."""
        if self.level == ALPHA:
            return self.lo, self.hi
        half = self.spread.half_width(self.level)
        return self.delta - half, self.delta + half

    @property
    def unadjusted(self) -> "Comparison":
        """The same claim decided alone at 95%."""
        return replace(self, family=1, level=ALPHA, p_holm=None)

    @property
    def resolved(self) -> bool:
        lo, hi = self.adjusted
        return lo > 0 or hi < 0

    @property
    def bound(self) -> float:
        """The largest |A - B| the decision interval admits."""
        return max(abs(x) for x in self.adjusted)

    @property
    def scope(self) -> str:
        """At which level the verdict is: alone, or with its family."""
        return "at 95%" if self.family == 1 else f"at 95% over {self.family} claims, Holm"

    @property
    def verdict(self) -> str:
        lo, hi = self.adjusted
        if lo > 0:
            return "holds (resolved)"
        if hi < 0:
            return "reversed (resolved)"
        return f"not resolved (|Δ| < {_num(self.bound)} {self.scope})"

    def cell(self) -> str:
        return f"{_num(self.delta, True)} [{_num(self.lo, True)}, {_num(self.hi, True)}]"

    def adjusted_cell(self) -> str:
        lo, hi = self.adjusted
        return f"[{_num(lo, True)}, {_num(hi, True)}]"

    def note(self) -> str:
        """Δ, the 95% interval and, beside it, the one the verdict is decided on, then the verdict."""
        adjusted = "" if self.family == 1 else f", {self.adjusted_cell()} Holm-adjusted ({self.family} claims)"
        return f"Δ {self.cell()} at 95%{adjusted}: {self.verdict}"


def holm(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Decide a family of claims together (Holm's step-down, statsmodels): the chance that any claim
    without a difference is resolved stays under alpha, whatever their dependence (and, in simulation,
    that any is resolved the wrong way). Each claim's decision interval is
    the one at the level its Holm step tests (alpha / the claims not yet resolved before it); a claim
    past the first unresolved step keeps that step's level. It excludes 0 exactly when Holm resolves
    the claim."""
    from statsmodels.stats.multitest import multipletests

    if not comparisons:
        return []
    p = np.array([c.p_value for c in comparisons])
    reject, p_holm, _, _ = multipletests(p, alpha=alpha, method="holm")
    m, levels, stop = len(p), np.empty(len(p)), None
    for step, i in enumerate(np.argsort(p, kind="stable")):
        if stop is None and not reject[i]:
            stop = step
        levels[i] = alpha / (m - (step if stop is None else stop))
    return [replace(c, family=m, level=float(lv), p_holm=float(q)) for c, lv, q in zip(comparisons, levels, p_holm)]


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
    return Comparison(a, b, *crossed_interval(d, **kw), differences=d, spread=crossed_spread(d))


def chain_verdict(comparisons: Sequence[Comparison]) -> str:
    """Verdict of an ordering claim A > B > C ... from its adjacent comparisons, each decided as it is
    alone (on its decision interval)."""
    if all(c.adjusted[0] > 0 for c in comparisons):
        return "holds (resolved)"
    reversed_ = [c for c in comparisons if c.adjusted[1] < 0]
    if reversed_:
        return "does not hold (resolved: " + ", ".join(f"{c.a} < {c.b}" for c in reversed_) + ")"
    open_ = [c for c in comparisons if not c.resolved]
    return ("not resolved (" + ", ".join(f"{c.a} vs {c.b}: |Δ| < {_num(c.bound)}" for c in open_)
            + f" {open_[0].scope})")
