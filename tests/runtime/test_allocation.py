"""Mode `allocate`'s arithmetic: counts per image, calibrated prices, masks."""

from __future__ import annotations

import numpy as np
import pytest

from budget_edge.errors import InputError
from budget_edge.runtime import allocation


def _chances(n: int = 400, k: int = 6, seed: int = 0) -> np.ndarray:
    """Rising chances per image with a random difficulty: easy images saturate early."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.5, 6.0, size=(n, 1))
    return 1.0 - np.exp(-np.arange(k + 1)[None, :] / difficulty) * 0.9


def test_counts_trade_chance_against_price() -> None:
    chances = np.array([[0.1, 0.8, 0.85, 0.9], [0.1, 0.2, 0.3, 0.95]])
    # K = 3: price 0.03 costs 0.01 per component; every gain in chance is worth it.
    assert allocation.counts_for(chances, np.array([0.03, 0.03])).tolist() == [3, 3]
    # Price 0.6 (0.2 per component): the easy image stops at 1, the hard one still goes on.
    assert allocation.counts_for(chances, np.array([0.6, 0.6])).tolist() == [1, 3]
    assert allocation.counts_for(chances, np.array([10.0, 10.0])).tolist() == [0, 0]


def test_ties_go_to_the_smaller_count() -> None:
    chances = np.array([[0.5, 0.5, 0.5]])
    assert allocation.counts_for(chances, np.array([0.0])).tolist() == [0]


@pytest.mark.parametrize("budget", [0.0, 0.1, 0.25, 0.5, 0.77, 1.0])
def test_calibrated_usage_is_at_most_the_budget_and_close_to_it(budget: float) -> None:
    chances = _chances()
    price = allocation.calibrate_prices(chances, np.array([budget]))[0]
    used = allocation.usage(chances, price)
    assert used <= budget + 1e-12
    # One image more than the usage found would exceed it: the price is not needlessly high.
    free_usage = allocation.usage(chances, 0.0)
    assert used >= min(budget, free_usage) - 2 / (len(chances) * 6) - 0.05


def test_prices_never_rise_with_the_budget() -> None:
    budgets = np.linspace(0, 1, 21)
    prices = allocation.calibrate_prices(_chances(seed=3), budgets)
    assert (np.diff(prices) <= 0).all()
    assert (prices >= 0).all()
    assert prices[-1] == 0.0  # at c = 1 nothing needs pricing


def test_easy_images_get_fewer_components_than_hard_ones() -> None:
    chances = _chances(n=1000)
    price = allocation.calibrate_prices(chances, np.array([0.5]))
    counts = allocation.counts_for(chances, np.full(len(chances), price[0]))
    easy = chances[:, 1] > np.quantile(chances[:, 1], 0.75)
    hard = chances[:, 1] < np.quantile(chances[:, 1], 0.25)
    assert counts[easy].mean() < counts[hard].mean()
    assert len(np.unique(counts)) >= 3


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 4)), np.zeros(5), np.zeros((3, 1)), np.array([[0.1, np.nan]])]
)
def test_calibration_refuses_bad_chances(bad: np.ndarray) -> None:
    with pytest.raises(InputError):
        allocation.calibrate_prices(bad, np.array([0.5]))


def test_prices_between_calibrated_budgets_step_down_to_the_lower_budget() -> None:
    budgets, prices = np.array([0.2, 0.6]), np.array([2.0, 1.0])
    got = allocation.prices_for(np.array([0.0, 0.2, 0.4, 0.6, 1.0]), budgets, prices)
    assert got.tolist() == [2.0, 2.0, 2.0, 1.0, 1.0]


def test_usage_between_calibrated_budgets_stays_within_the_budget() -> None:
    chances = _chances(n=600, seed=7)
    budgets = np.linspace(0, 1, 21)
    prices = allocation.calibrate_prices(chances, budgets)
    for c in np.linspace(0, 1, 97):
        price = allocation.prices_for(np.array([c]), budgets, prices)[0]
        assert allocation.usage(chances, price) <= c + allocation.BUDGET_TOLERANCE


def test_a_float32_budget_takes_its_own_calibrated_price() -> None:
    budgets = np.round(np.linspace(0, 1, 21), 2)
    prices = np.linspace(3.0, 0.0, 21)
    as_float32 = budgets.astype(np.float32)  # what the runtime holds: 0.7 -> 0.69999999
    assert (as_float32.astype(np.float64) < budgets).any()
    np.testing.assert_array_equal(allocation.prices_for(as_float32, budgets, prices), prices)


def test_masks_keep_the_agents_top_components_at_each_images_count() -> None:
    k = 4
    chances = np.array(
        [
            [0.1, 0.9, 0.9, 0.9, 0.9],  # easy: one component
            [0.1, 0.2, 0.3, 0.4, 0.95],
        ]
    )  # hard: all four
    level_probs = np.zeros((2, k + 1, k), np.float32)
    level_probs[0, 1] = [0.1, 0.2, 0.9, 0.3]  # at count 1 the agent ranks component 2 first
    level_probs[1, 4] = [0.9, 0.8, 0.7, 0.6]
    budgets, prices = np.array([0.0, 1.0]), np.array([0.4, 0.4])
    mask, probs = allocation.allocated_masks(
        chances, level_probs, np.array([0.5, 0.5]), budgets, prices
    )
    assert mask.tolist() == [[0, 0, 1, 0], [1, 1, 1, 1]]
    np.testing.assert_array_equal(probs, level_probs[[0, 1], [1, 4]])


def test_masks_refuse_outputs_that_do_not_fit() -> None:
    with pytest.raises(InputError, match="do not fit"):
        allocation.allocated_masks(
            np.zeros((2, 4)), np.zeros((2, 5, 4)), np.zeros(2), np.array([0.0]), np.array([0.0])
        )


def test_with_count_masks_each_image_runs_the_row_of_its_count() -> None:
    chances = np.array(
        [
            [0.1, 0.9, 0.9, 0.9],  # easy: one component
            [0.1, 0.2, 0.3, 0.95],
        ]
    )  # hard: all three
    table = np.array([[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 1, 1]], np.uint8)
    mask, shares = allocation.decide(
        [chances],
        allocation.CountTable.of(table),
        np.array([0.5, 0.5]),
        np.array([0.0]),
        np.array([0.4]),
    )
    assert mask.tolist() == [[0, 1, 0], [1, 1, 1]]
    # Component 1 is in three of the four rows: a cap drops it last.
    np.testing.assert_allclose(shares, [[0, 0.75, 0], [0.5, 0.75, 0.25]])


def test_count_masks_refuse_chances_that_do_not_fit() -> None:
    table = np.tril(np.ones((4, 3), np.uint8), -1)
    with pytest.raises(InputError, match="do not fit"):
        allocation.table_masks(
            np.zeros((2, 5)),
            allocation.CountTable.of(table),
            np.zeros(2),
            np.array([0.0]),
            np.array([0.0]),
        )
