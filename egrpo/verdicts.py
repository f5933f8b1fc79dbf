"""Verdicts as records: each table's claims decided together (stats.holm), written to and read back from
comparisons.csv, and the chance that a rerun reaches the same verdict.

A rerun is a new draw of the same design from the two-way random-effects model the intervals assume
(docs/statistics.md): new training seeds and, as the interval assumes, new test prompts. Its chance of
reaching a claim's verdict is computed with the claim's effect equal to its estimate and its variance
components at their estimates (no shrinkage), at the level the claim was decided at; the rerun's own
half-width is random (its mean squares are chi-square), which is what makes a claim just past its
bound replicate about half the time. docs/statistics.md says what this assumes and where it errs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .stats import ALPHA, Comparison, Spread, fewest_seeds, holm, t_quantile

GRID = 128  # quantiles of each mean square's chi-square distribution a rerun's half-width is averaged over
TARGET = 0.9  # the chance of the same verdict a claim's seed count is sized for
LIMIT = 1024  # the most seeds a search considers
SPREAD = tuple(f.name for f in dataclasses.fields(Spread))  # the spread's columns in comparisons.csv
KEY = ["table", "claim", "metric", "a", "b"]  # what identifies a claim across runs


# ---- the chance of the same verdict -------------------------------------------------------------------
def resolve_probability(spread: Spread, effect: float, level: float, *, grid: int = GRID) -> tuple[float, float]:
    """(chance of resolving in the effect's direction, chance of resolving against it) for a comparison
    drawn with this spread (its expected mean squares) and true difference `effect`, decided at `level`:
    the estimate is normal around the effect with the model's variance, the half-width is averaged over
    the chi-square distributions of its mean squares (independent of the estimate in a balanced design)."""
    from scipy import stats

    q = (np.arange(grid) + 0.5) / grid
    half2 = np.zeros(())
    for var, df in spread.terms:  # each term's variance scatters as var * chi2_df / df
        scatter = var * stats.chi2.ppf(q, df) / df if math.isfinite(df) else np.full(1, var)
        half2 = np.add.outer(half2, t_quantile(level, df) ** 2 * scatter)
    half = np.sqrt(half2).ravel()
    sd = math.sqrt(spread.variance)
    if sd == 0:
        return float(np.mean(abs(effect) > half)), 0.0
    return (float(np.mean(stats.norm.cdf((abs(effect) - half) / sd))),
            float(np.mean(stats.norm.cdf((-abs(effect) - half) / sd))))


def _expected(spread: Spread) -> Spread:
    """The spread's expected mean squares (moment estimates, as a projection to its own seed count makes
    them); one seed: the measured spread."""
    return spread if spread.seeds < 2 or spread.ms_seed is None else spread.project(spread.seeds)


def same_verdict(c: Comparison) -> float | None:
    """The chance that a rerun of the same design reaches c's verdict at c's level: resolved the same way
    if c is resolved, not resolved if it is not (None without a spread)."""
    if c.spread is None:
        return None
    up, down = resolve_probability(_expected(c.spread), c.delta, c.level)
    return up if c.resolved else 1.0 - up - down


def seeds_to_replicate(c: Comparison, target: float = TARGET, limit: int = LIMIT) -> int | None:
    """The fewest training seeds at which a rerun resolves c in its estimate's direction with chance
    `target`, at c's level (for a resolved claim: the seeds its verdict needs to replicate; for an open
    one: to be resolved, if the effect is as estimated). None: no spread, one seed, a zero estimate, or
    more than `limit` seeds (the test prompts' part alone may keep it open)."""
    if c.spread is None or c.spread.seeds < 2 or c.spread.ms_seed is None or c.delta == 0:
        return None
    return fewest_seeds(lambda n: resolve_probability(c.spread.project(n), c.delta, c.level)[0] >= target, limit)


# ---- claims as records ---------------------------------------------------------------------------------
@dataclass
class Claim:
    """One claim of a table (its family), rendered once the family is decided (decide)."""

    table: str
    claim: str
    metric: str
    kind: str
    comparison: Comparison
    decided: bool = False

    def __str__(self) -> str:
        if not self.decided:
            raise RuntimeError(f"{self.table}: a claim is printed once its table's claims are decided together")
        c = self.comparison
        return f"{c.a} > {c.b} on {self.metric}: {c.note()}"

    def row(self) -> dict:
        c = self.comparison
        lo, hi = c.adjusted
        spread = dataclasses.asdict(c.spread) if c.spread else dict.fromkeys(SPREAD)
        return {"table": self.table, "claim": self.claim, "metric": self.metric, "kind": self.kind, "a": c.a,
                "b": c.b, "delta": c.delta, "lo": c.lo, "hi": c.hi, "verdict": c.verdict,
                "seeds_to_resolve": c.seeds_to_resolve, "family": c.family, "p": c.p_value if c.spread else None,
                "p_holm": c.p_holm, "level": c.level, "lo_holm": lo, "hi_holm": hi, "verdict_95": c.unadjusted.verdict,
                "same_verdict": same_verdict(c), "seeds_for_90": seeds_to_replicate(c), **spread}


def decide(claims: Iterable[Claim], alpha: float = ALPHA) -> list[Claim]:
    """Decide each table's claims together (the family is the claims recorded under one table name, so
    it grows with the methods and rows a config has), in place; returns them."""
    claims = list(claims)
    for table in dict.fromkeys(c.table for c in claims):
        family = [c for c in claims if c.table == table]
        for claim, decided in zip(family, holm([c.comparison for c in family], alpha)):
            claim.comparison, claim.decided = decided, True
    return claims


def frame(claims: Sequence[Claim]) -> pd.DataFrame:
    """comparisons.csv: one row per claim (integers stay integers, a missing count blank)."""
    out = pd.DataFrame([c.row() for c in claims])
    return out.astype({k: "Int64" for k in ("seeds_to_resolve", "seeds_for_90", "seeds", "prompts")})


def _spread(row: pd.Series) -> Spread:
    value = lambda k: None if pd.isna(row[k]) else row[k]  # noqa: E731
    spread = Spread(**{k: value(k) for k in SPREAD})
    return dataclasses.replace(spread, seeds=int(spread.seeds), ms_rest=spread.ms_rest or 0.0,
                               prompts=None if spread.prompts is None else int(spread.prompts))


def reconstruct(row: pd.Series, seeds: int, prompts: int, seed_share: float) -> Spread:
    """A spread for a stored claim that records only its 95% interval, on a design of `seeds` x `prompts`:
    a seed-paired claim (kind "compute") has the seeds' term only, exactly; a paired one puts the share
    `seed_share` of its squared half-width in the seeds' term (1: all of it, on S - 1 degrees of
    freedom, the widest the interval can be at other levels) and the rest in the prompts' term, with no
    residual known (the prompts' term then does not shrink with seeds)."""
    half = (row["hi"] - row["lo"]) / 2
    n = seeds * prompts
    if row["kind"] == "compute":
        return Spread(seeds, None, seeds * (half / t_quantile(ALPHA, seeds - 1)) ** 2, None)
    return Spread(seeds, prompts, seed_share * n * (half / t_quantile(ALPHA, seeds - 1)) ** 2,
                  (1 - seed_share) * n * (half / t_quantile(ALPHA, prompts - 1)) ** 2)


def read(source: str | Path | pd.DataFrame, *, seeds: int | None = None, prompts: int | None = None,
         seed_share: float = 1.0) -> list[Claim]:
    """The claims of a comparisons.csv, undecided. One written before the spreads were recorded needs its
    design (seeds, prompts) to reconstruct them (reconstruct)."""
    df = source if isinstance(source, pd.DataFrame) else pd.read_csv(source)
    recorded = set(SPREAD) <= set(df.columns)
    if not recorded and (seeds is None or prompts is None):
        raise ValueError("these comparisons record no spread (written before they were recorded): give the "
                         "design, seeds and prompts, to reconstruct one from each interval")
    claims = []
    for _, row in df.iterrows():
        spread = _spread(row) if recorded else reconstruct(row, seeds, prompts, seed_share)
        c = Comparison(row["a"], row["b"], float(row["delta"]), float(row["lo"]), float(row["hi"]), spread=spread)
        claims.append(Claim(row["table"], row["claim"], row["metric"], row["kind"], c))
    return claims


def outcome(verdict: str) -> str:
    """holds / reversed / not resolved: what two runs' verdicts are compared on."""
    return verdict.split(" (")[0] if verdict.startswith(("holds", "reversed")) else "not resolved"


def side_by_side(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """Two runs' decided comparisons (frame) claim by claim: Δ, the 95% and the decision intervals, the
    verdict, its chance of replicating and the seeds that chance needs, for each; and whether the two
    verdicts agree."""
    cols = ["delta", "lo", "hi", "p", "lo_holm", "hi_holm", "verdict", "verdict_95", "same_verdict", "seeds_for_90"]
    keys = [set(map(tuple, f[KEY].to_numpy().tolist())) for f in (first, second)]
    if keys[0] != keys[1]:
        raise ValueError(f"the two runs do not make the same claims: {sorted(keys[0] ^ keys[1])}")
    both = first[KEY + ["kind"] + cols].merge(second[KEY + cols], on=KEY, how="left", suffixes=("_1", "_2"),
                                             validate="one_to_one")  # in the first run's order
    both["agree"] = both["verdict_1"].map(outcome) == both["verdict_2"].map(outcome)
    return both
