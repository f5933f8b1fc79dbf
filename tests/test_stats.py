"""The paired statistics on synthetic data whose answer is known."""

import numpy as np
import pytest

from egrpo.stats import (Comparison, chain_verdict, compare, crossed_interval, per_prompt, projected_half_width,
                         seed_interval)


def crossed(rng, mu, n_s=6, n_p=72, seed_sd=0.004, prompt_sd=0.01, noise_sd=0.01):
    """d[s, p] = mu + seed effect + prompt effect + noise: the design of a paired comparison."""
    return (mu + rng.normal(0, seed_sd, (n_s, 1)) + rng.normal(0, prompt_sd, (1, n_p))
            + rng.normal(0, noise_sd, (n_s, n_p)))


@pytest.mark.parametrize("n_s,seed_sd", [(6, 0.004), (2, 0.004), (2, 0.02), (1, 0.0)])
def test_crossed_interval_covers_the_true_mean(n_s, seed_sd):
    """95% coverage whatever the seed count: two seeds give few degrees of freedom, not false
    confidence."""
    rng = np.random.default_rng(n_s)
    reps = 400
    hits = sum(lo <= 0.01 <= hi for lo, hi in
               (crossed_interval(crossed(rng, 0.01, n_s=n_s, seed_sd=seed_sd))[1:] for _ in range(reps)))
    assert 0.92 <= hits / reps <= 1.0, hits / reps


def test_a_seed_blind_interval_would_undercover():
    """Treating the seeds' prompts as independent samples (ignoring that a seed shifts all its prompts
    together) covers far less than 95%: the seed term is what makes the interval honest."""
    rng = np.random.default_rng(7)
    honest = naive = 0
    for _ in range(300):
        d = crossed(rng, 0.0, n_s=4, seed_sd=0.01, noise_sd=0.002)
        _, lo, hi = crossed_interval(d)
        honest += lo <= 0 <= hi
        _, lo, hi = crossed_interval(d.reshape(1, -1))  # all 4 x 72 values as one seed's prompts
        naive += lo <= 0 <= hi
    assert honest / 300 > 0.92 and naive / 300 < 0.6


def test_verdicts_resolve_large_effects_and_bound_null_ones():
    rng = np.random.default_rng(2)
    base = rng.normal(0.8, 0.02, (1, 72))
    better = base + 0.02 + crossed(rng, 0.0, n_s=4, seed_sd=0.002, prompt_sd=0.002, noise_sd=0.005)
    same = base + crossed(rng, 0.0, n_s=4, seed_sd=0.002, prompt_sd=0.002, noise_sd=0.005)
    up = compare("A", "base", better, base)
    assert up.verdict == "holds (resolved)" and up.lo > 0.01
    down = compare("base", "A", np.broadcast_to(base, better.shape), better)
    assert down.verdict == "reversed (resolved)"
    null = compare("B", "base", same, base)
    assert null.verdict.startswith("not resolved (|Δ| < ") and null.bound < 0.01


def test_pairing_by_seed_and_prompt_is_tighter_than_unpaired():
    """Two methods sharing the seed and prompt effects: the paired interval of their difference is far
    narrower than the spread of either method's scores."""
    rng = np.random.default_rng(3)
    shared = crossed(rng, 0.8, n_s=4, seed_sd=0.01, prompt_sd=0.05, noise_sd=0.0)
    a = shared + 0.003 + rng.normal(0, 0.002, shared.shape)
    b = shared + rng.normal(0, 0.002, shared.shape)
    c = compare("A", "B", a, b)
    assert c.verdict == "holds (resolved)" and (c.hi - c.lo) < 0.003


def test_chain_verdicts():
    hold = Comparison("A", "B", 0.02, 0.01, 0.03)
    open_ = Comparison("B", "C", 0.001, -0.002, 0.004)
    rev = Comparison("C", "D", -0.02, -0.03, -0.01)
    assert chain_verdict([hold]) == "holds (resolved)"
    assert chain_verdict([hold, open_]) == "not resolved (B vs C: |Δ| < 0.0040 at 95%)"
    assert chain_verdict([hold, open_, rev]).startswith("does not hold (resolved: C < D")


def test_seed_interval_pairs_seeds_only():
    rng = np.random.default_rng(4)
    seed_shift = rng.normal(0, 0.05, 5)  # moves both methods of a seed together
    a = [s + 0.02 + rng.normal(0, 0.01, 30) for s in seed_shift]
    b = [s + rng.normal(0, 0.01, 20) for s in seed_shift]
    delta, lo, hi = seed_interval(a, b)
    assert 0.01 < lo < delta < hi < 0.03
    one = seed_interval(a[:1], b[:1])  # one seed: Welch over the two runs' units
    assert one[1] < one[0] < one[2]
    with pytest.raises(ValueError):
        seed_interval(a, b[:3])


def test_samples_per_prompt_are_averaged_and_shrink_the_interval():
    """A prompt's K evaluation samples are one unit (their mean); with sampling noise larger than the
    prompts' true spread, K = 8 samples narrow the interval of a gain about as sqrt(K) predicts, and
    still cover the true gain."""
    import pandas as pd

    rng = np.random.default_rng(5)
    n_s, n_p, gain = 4, 72, 0.01
    prompt = rng.normal(0, 0.01, n_p)

    def scores(k, shift):  # [seeds, prompts] per-prompt means of k noisy samples, through per_prompt
        rows = []
        for s in range(n_s):
            df = pd.DataFrame({"prompt_index": np.repeat(np.arange(n_p), k), "sample": np.tile(np.arange(k), n_p)})
            df["hps"] = shift + np.repeat(prompt, k) + rng.normal(0, 0.08, n_p * k)
            rows.append(per_prompt(df.sample(frac=1, random_state=s), ["hps"])["hps"].to_numpy())
        return np.stack(rows)

    width = {}
    for k in (1, 8):
        cs = [compare("A", "base", scores(k, gain), scores(k, 0.0)) for _ in range(40)]
        width[k] = np.mean([c.hi - c.lo for c in cs])
        assert np.mean([c.lo <= gain <= c.hi for c in cs]) >= 0.9
    assert 0.3 < width[8] / width[1] < 0.5, width  # sqrt(1/8) = 0.35 of the noise, plus the prompts' spread
    uneven = pd.DataFrame({"prompt_index": [0, 0, 1], "sample": [0, 1, 0], "hps": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="different numbers of samples"):
        per_prompt(uneven, ["hps"])


@pytest.mark.parametrize("seeds,prompts", [(4, None), (16, None), (4, 288), (16, 288)])
def test_projected_half_width_predicts_the_interval_at_more_seeds_and_prompts(seeds, prompts):
    """From 4 seeds on 72 prompts, the projected half-width at more seeds or prompts matches the mean
    half-width of intervals actually computed there (same variance components), within sampling
    error; at 4 seeds and 72 prompts it reproduces the measured interval's expectation."""
    rng = np.random.default_rng(11)
    kw = dict(seed_sd=0.006, prompt_sd=0.03, noise_sd=0.05)
    projected = np.mean([projected_half_width(crossed(rng, 0.02, n_s=4, **kw), seeds, prompts=prompts)
                         for _ in range(200)])
    actual = np.mean([np.diff(crossed_interval(crossed(rng, 0.02, n_s=seeds, n_p=prompts or 72, **kw))[1:])[0] / 2
                      for _ in range(200)])
    assert abs(projected / actual - 1) < 0.1, (projected, actual)


def test_projection_needs_two_seeds_and_two_prompts():
    rng = np.random.default_rng(13)
    with pytest.raises(ValueError, match="two seeds"):
        projected_half_width(crossed(rng, 0.0, n_s=1), 8)
    with pytest.raises(ValueError, match="two test prompts"):
        projected_half_width(crossed(rng, 0.0, n_s=4), 8, prompts=1)


def test_seeds_to_resolve():
    """A large effect resolves with the seeds at hand; a small one needs more, an estimate of exactly
    zero never; one measured seed cannot say."""
    rng = np.random.default_rng(12)
    kw = dict(n_s=4, seed_sd=0.004, prompt_sd=0.01, noise_sd=0.01)
    big = compare("A", "B", crossed(rng, 0.05, **kw), np.zeros((4, 72)))
    assert big.resolved and big.seeds_to_resolve <= 4
    small = crossed(rng, 0.008, **kw)
    n = compare("A", "B", small, np.zeros((4, 72))).seeds_to_resolve
    assert n is not None and n > 4 and projected_half_width(small, n) < abs(small.mean()) <= projected_half_width(small, n - 1)
    assert compare("A", "B", np.zeros((4, 72)), np.zeros((4, 72))).seeds_to_resolve is None
    assert compare("A", "B", crossed(rng, 0.01, n_s=1), np.zeros((1, 72))).seeds_to_resolve is None
