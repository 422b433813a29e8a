"""The batch-1 count plan of mode 'allocate' decides exactly as the general path does."""

from __future__ import annotations

import numpy as np
import pytest

from budget_edge.runtime import allocation
from budget_edge.runtime.count_plan import CountPlan

K = 6
TABLE = allocation.CountTable.of([[1] * i + [0] * (K - i) for i in range(K + 1)])
BUDGETS = np.array([0.0, 0.25, 0.5, 0.7, 1.0])
PRICES = np.array([9.0, 0.6, 0.3, 0.1, 0.0])
COMP_FLOPS = np.arange(1, K + 1, dtype=np.int64) * 100


def _plan(
    whole: dict[bytes, str] | None = None, prefix_blocks: list[list[int]] | None = None
) -> CountPlan:
    if whole is None:
        whole = {row.tobytes(): f"g{i}" for i, row in enumerate(TABLE.masks)}
    return CountPlan.build(
        "allocator", TABLE, whole, BUDGETS, PRICES, 7, COMP_FLOPS, prefix_blocks or []
    )


def test_counts_equal_the_general_arithmetic_on_many_images() -> None:
    plan = _plan()
    rng = np.random.default_rng(0)
    chances = rng.uniform(size=(300, K + 1)).astype(np.float32)
    chances[:40] = np.round(chances[:40], 1)  # ties between counts
    for budget in (0.0, 0.1, 0.25, 0.49, 0.5, 0.7, 0.99, 1.0):
        want = allocation.counts_for(
            chances, allocation.prices_for(np.full(300, budget, np.float32), BUDGETS, PRICES)
        )
        got = [plan.count(chances[i : i + 1], budget) for i in range(300)]
        assert got == want.tolist(), budget


def test_a_float32_budget_just_under_a_calibrated_one_takes_its_price() -> None:
    plan = _plan()
    assert plan.price(0.7) == 0.1  # float32(0.7) < 0.7, within the tolerance
    assert plan.price(float(np.float32(0.7))) == 0.1
    assert plan.price(0.69) == 0.3
    for b in (0.0, 0.3, 0.5, 0.7, 1.0, 0.6999):
        want = allocation.prices_for(np.array([b], np.float32), BUDGETS, PRICES)[0]
        assert plan.price(b) == want


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_non_finite_chances_pick_what_numpy_argmax_picks(special: float) -> None:
    plan = _plan()
    chances = np.array([[0.1, 0.2, special, 0.3, special, 0.9, 0.95]], np.float32)
    want = allocation.counts_for(chances, np.array([0.3]))
    assert plan.count(chances, 0.5) == int(want[0])


def test_all_minus_infinity_picks_count_zero_as_argmax_does() -> None:
    plan = _plan()
    chances = np.full((1, K + 1), -np.inf, np.float32)
    assert plan.count(chances, 0.5) == 0 == int(allocation.counts_for(chances, np.ones(1))[0])


def test_rows_carry_their_graph_mask_shares_and_flops_read_only() -> None:
    plan = _plan()
    assert plan.graphs == tuple(f"g{i}" for i in range(K + 1))
    np.testing.assert_array_equal(plan.masks, TABLE.masks)
    np.testing.assert_array_equal(plan.shares, TABLE.shares)
    assert plan.flops.tolist() == [7 + int(COMP_FLOPS[:i].sum()) for i in range(K + 1)]
    with pytest.raises(ValueError):
        plan.masks[0, 0] = 1


def test_a_count_without_a_whole_mask_graph_has_none() -> None:
    whole = {row.tobytes(): f"g{i}" for i, row in enumerate(TABLE.masks[:-1])}
    assert _plan(whole).graphs == (*(f"g{i}" for i in range(K)), None)


def test_rows_are_projected_to_the_prefix_variants_the_artifact_has() -> None:
    # Components 3..5 are paths of one prefix-scheme block: a row keeping paths {4} runs
    # the prefix {3}, as the general path projects the masks it runs.
    table = allocation.CountTable.of(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 0],
            [1, 0, 0, 0, 1, 0],
            [1, 1, 0, 0, 1, 0],
            [1, 1, 1, 0, 1, 0],
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1],
        ]
    )
    projected = allocation.CountTable.of(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
            [1, 0, 0, 1, 0, 0],
            [1, 1, 0, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1],
        ]
    )
    whole = {row.tobytes(): f"p{i}" for i, row in enumerate(projected.masks)}
    plan = CountPlan.build("allocator", table, whole, BUDGETS, PRICES, 0, COMP_FLOPS, [[3, 4, 5]])
    np.testing.assert_array_equal(plan.masks, projected.masks)
    np.testing.assert_array_equal(plan.shares, table.shares)  # the table's, as in general
