import math

import numpy as np
import pytest

from budget_edge.bench.significance import mcnemar_exact, wilson_interval


def test_wilson_interval_matches_the_textbook_values():
    # Newcombe (1998), table I: 81 of 263 -> 0.2553 to 0.3662.
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=1e-4)
    assert high == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    low, high = wilson_interval(9300, 10000)  # a Fashion-MNIST accuracy: about +-0.5 points
    assert high - low == pytest.approx(0.0100, abs=5e-4)
    with pytest.raises(ValueError, match="at least one image"):
        wilson_interval(0, 0)


def test_mcnemar_counts_only_the_images_where_the_methods_disagree():
    a = np.array([1, 1, 1, 0, 0, 1, 1, 0], bool)
    b = np.array([1, 0, 0, 0, 1, 1, 1, 0], bool)
    test = mcnemar_exact(a, b)
    assert (test.only_a, test.only_b, test.total) == (2, 1, 8)
    # Two-sided binomial on 3 discordant pairs, 1 the rarer way: 2 * (1 + 3) / 8 = 1.
    assert test.p_value == pytest.approx(1.0)
    assert test.accuracy_delta == pytest.approx(1 / 8)
    assert mcnemar_exact(a, a).p_value == 1.0


def test_mcnemar_p_value_is_the_exact_binomial_tail_also_for_many_pairs():
    only_a, only_b = 40, 15
    a = np.r_[np.ones(only_a, bool), np.zeros(only_b, bool), np.ones(900, bool)]
    b = np.r_[np.zeros(only_a, bool), np.ones(only_b, bool), np.ones(900, bool)]
    n = only_a + only_b
    exact = 2 * sum(math.comb(n, k) for k in range(only_b + 1)) / 2**n
    assert mcnemar_exact(a, b).p_value == pytest.approx(exact, rel=1e-9)
    big = mcnemar_exact(
        np.r_[np.ones(3000, bool), np.zeros(2000, bool)],
        np.r_[np.zeros(3000, bool), np.ones(2000, bool)],
    )
    assert 0 < big.p_value < 1e-40


def test_mcnemar_refuses_vectors_of_other_lengths():
    with pytest.raises(ValueError, match="equal, non-empty"):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))
