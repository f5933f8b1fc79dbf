import math

import pytest

from egrpo.merge import entropy_table, merge_lengths, step_entropy
from egrpo.schedule import shifted_sigmas

SIGMAS = shifted_sigmas(16, 3.0)

# docs/reference.md: T = 16, s = 3, a = 0.7, active steps 0..7, entropy-power reading
TAU_TABLE = {
    1.8: [1, 1, 1, 2, 2, 2, 2, 3],
    2.0: [1, 1, 1, 2, 2, 2, 3, 3],
    2.2: [1, 1, 2, 2, 2, 3, 3, 3],
    2.6: [1, 1, 2, 3, 3, 4, 4, 4],
}


@pytest.mark.parametrize("tau", sorted(TAU_TABLE))
def test_tau_table_entropy_power(tau):
    assert merge_lengths(SIGMAS, range(8), tau=tau, eta=0.7) == TAU_TABLE[tau]


def test_squared_reading_collapses_2_0_and_2_2():
    sq = dict(reading="entropy_power_squared", eta=0.7)
    assert merge_lengths(SIGMAS, range(8), tau=2.0, **sq) == [1, 1, 1, 1, 1, 2, 2, 2]
    assert merge_lengths(SIGMAS, range(8), tau=2.2, **sq) == [1, 1, 1, 1, 1, 2, 2, 2]


def test_tau_zero_and_fixed_and_end_of_schedule():
    assert merge_lengths(SIGMAS, range(15), tau=0.0, eta=0.7) == [1] * 15
    # a merged step never lands on sigma = 0: at the latest on step T - 1, leaving one ODE step
    assert merge_lengths(SIGMAS, [0, 10, 12, 14], tau=2.2, eta=0.7, fixed=4) == [4, 4, 3, 1]
    assert merge_lengths(SIGMAS, [12, 14], tau=100.0, eta=0.7) == [3, 1]  # unreachable threshold: longest allowed
    # Table 3's second8 at tau 2.2: steps 11-14 would reach sigma = 0 uncapped; they end on step 15
    assert merge_lengths(SIGMAS, range(8, 15), tau=2.2, eta=0.7) == [4, 4, 4, 4, 3, 2, 1]
    assert merge_lengths(SIGMAS, [12], tau=100.0, eta=0.7, last=16) == [4]  # the cap is a parameter


def test_chosen_length_is_smallest_reaching_tau():
    for n, l in enumerate(TAU_TABLE[2.2]):
        assert step_entropy(SIGMAS, n, n + l, eta=0.7) >= 2.2
        if l > 1:
            assert step_entropy(SIGMAS, n, n + l - 1, eta=0.7) < 2.2


def test_entropy_table_values():
    t = entropy_table(SIGMAS, 3, eta=0.7)
    assert t.shape == (16, 3)
    assert math.isnan(t[15, 1]) and math.isnan(t[14, 2])
    sd = 0.7 * math.sqrt(float(SIGMAS[4]) / (1 - float(SIGMAS[4]))) * math.sqrt(float(SIGMAS[4] - SIGMAS[6]))
    assert math.isclose(t[4, 1], math.sqrt(2 * math.pi * math.e) * sd, rel_tol=1e-6)
    assert all(t[i, 1] > t[i, 0] for i in range(15))  # merging raises entropy


def test_bad_arguments():
    with pytest.raises(ValueError, match="reading"):
        merge_lengths(SIGMAS, [0], tau=2.2, eta=0.7, reading="bits")
    with pytest.raises(ValueError, match="active step 15"):  # the last step lands on sigma = 0
        merge_lengths(SIGMAS, [15], tau=2.2, eta=0.7)
