"""The paired statistics on synthetic data whose answer is known."""

import numpy as np
import pytest

from egrpo.stats import (ALPHA, Comparison, Spread, chain_verdict, compare, compare_seeds, crossed_interval, holm,
                         mean_squares, per_prompt, projected_half_width, seed_interval)


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


# ---- cross-checks against well-kept libraries -------------------------------------------------------
def test_mean_squares_match_statsmodels_anova():
    """The hand-written two-way ANOVA (the crossed interval's estimator) against statsmodels' OLS ANOVA of
    d ~ seed + prompt on the same table."""
    import pandas as pd
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    d = crossed(np.random.default_rng(21), 0.01, n_s=4, n_p=12, seed_sd=0.01, prompt_sd=0.02, noise_sd=0.01)
    long = pd.DataFrame({"d": d.ravel(), "seed": np.repeat(np.arange(4), 12), "prompt": np.tile(np.arange(12), 4)})
    table = anova_lm(ols("d ~ C(seed) + C(prompt)", data=long).fit())
    expected = table.loc[["C(seed)", "C(prompt)", "Residual"], "mean_sq"].to_numpy()
    np.testing.assert_allclose(mean_squares(d), expected, rtol=1e-10)


def test_seed_intervals_are_scipys_t_and_welch_intervals():
    """Seed-paired claims take scipy's one-sample t-interval over the per-seed differences (Welch's
    two-sample interval with one seed); their spread re-forms the same interval and scipy's p-value."""
    from scipy import stats

    rng = np.random.default_rng(22)
    a = [0.02 + rng.normal(0, 0.01, 30) + s for s in rng.normal(0, 0.02, 5)]
    b = [rng.normal(0, 0.01, 20) + s for s in rng.normal(0, 0.02, 5)]
    diffs = np.array([x.mean() - y.mean() for x, y in zip(a, b)])
    one = stats.ttest_1samp(diffs, 0.0)
    c = compare_seeds("A", "B", a, b)
    assert (c.lo, c.hi) == tuple(one.confidence_interval(0.95)) == seed_interval(a, b)[1:]
    assert c.spread.half_width() == pytest.approx((c.hi - c.lo) / 2, rel=1e-12)
    assert c.p_value == pytest.approx(one.pvalue, rel=1e-8)
    welch = stats.ttest_ind(a[0], b[0], equal_var=False)
    w = compare_seeds("A", "B", a[:1], b[:1])
    assert (w.lo, w.hi) == tuple(welch.confidence_interval(0.95))
    assert w.spread.half_width() == pytest.approx((w.hi - w.lo) / 2, rel=1e-12)
    assert w.p_value == pytest.approx(welch.pvalue, rel=1e-8)


def test_p_value_is_the_level_at_which_the_interval_reaches_zero():
    rng = np.random.default_rng(23)
    c = compare("A", "B", crossed(rng, 0.006, n_s=4, seed_sd=0.004, noise_sd=0.02), np.zeros((4, 72)))
    p = c.p_value
    assert 0 < p < 1 and c.spread.half_width(p) == pytest.approx(abs(c.delta), rel=1e-9)
    assert crossed_interval(c.differences, alpha=p * 1.01)[1] > 0 > crossed_interval(c.differences, alpha=p * 0.99)[1]
    assert Spread(4, 72, 1e-4, 1e-4).p_value(0.0) == 1.0


@pytest.fixture
def quick_holm(monkeypatch):
    """statsmodels' Holm runs a full garbage collection per call (about 0.1 s with torch loaded); the
    simulations make hundreds of calls."""
    import gc

    monkeypatch.setattr(gc, "collect", lambda *args, **kw: 0)


def test_holm_resolves_exactly_what_statsmodels_rejects(quick_holm):
    """Families of 1-8 claims with effects from none to large: each claim is resolved exactly when
    statsmodels' Holm rejects it, with its adjusted p-value; its decision interval holds the 95% one and
    lies within the Bonferroni one (level alpha / m); a claim alone is decided at 95%."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(24)
    resolved = 0
    for _ in range(40):
        m = int(rng.integers(1, 9))
        family = [compare(f"A{i}", "B", crossed(rng, rng.choice([0.0, 0.004, 0.008, 0.02]), n_s=4, seed_sd=0.004),
                          np.zeros((4, 72))) for i in range(m)]
        decided = holm(family)
        reject, p_holm, _, _ = multipletests([c.p_value for c in family], alpha=ALPHA, method="holm")
        assert [c.resolved for c in decided] == list(reject)
        np.testing.assert_allclose([c.p_holm for c in decided], p_holm)
        for before, c in zip(family, decided):
            lo, hi = c.adjusted
            half = c.spread.half_width(ALPHA / m)
            assert c.family == m and ALPHA / m <= c.level <= ALPHA
            assert c.delta - half - 1e-15 <= lo <= c.lo and c.hi <= hi <= c.delta + half + 1e-15
            assert c.unadjusted.verdict == before.verdict
        if m == 1:
            assert decided[0].adjusted == (family[0].lo, family[0].hi) and decided[0].scope == "at 95%"
        resolved += int(reject.sum())
    assert resolved > 10  # the families did resolve claims, not only the easy case


def test_a_table_of_claims_keeps_false_verdicts_under_5_percent(quick_holm):
    """Simulated from the two-way random-effects model, a table of 6 claims at 4 seeds x 72 prompts: five
    with no difference and one large (known) difference. Decided together (Holm), the tables that resolve
    any null claim, or the real one the wrong way, stay under 5%; decided each at 95% (an interval that
    covers 97-99% here), about one in eleven does."""
    rng = np.random.default_rng(25)
    kw = dict(n_s=4, seed_sd=0.006, prompt_sd=0.01, noise_sd=0.03)
    tables, false_holm, false_alone = 400, 0, 0
    for _ in range(tables):
        family = [compare(f"A{i}", "B", crossed(rng, effect, **kw), np.zeros((4, 72)))
                  for i, effect in enumerate([0.0] * 5 + [-0.03])]
        false = lambda cs: any(c.resolved for c in cs[:5]) or cs[5].adjusted[0] > 0  # noqa: E731
        false_holm += false(holm(family))
        false_alone += false(family)
    assert false_holm / tables <= 0.05 < 0.06 <= false_alone / tables, (false_holm, false_alone)  # 0.003, 0.09
