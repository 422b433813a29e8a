"""Mask decisions: the reference's 0.5 threshold, seeded sampling, the hard cap, prefixes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budget_edge.errors import InputError
from budget_edge.runtime.masks import (
    CostModel,
    cap,
    check_variants,
    choose,
    prefix_blocks,
    project_to_variants,
    rank_counts,
)


def test_greedy_thresholds_at_one_half_inclusive() -> None:
    probs = np.array([[0.0, 0.4999, 0.5, 0.5001, 1.0]], np.float32)
    assert choose(probs, "greedy", None).tolist() == [[0, 0, 1, 1, 1]]


def test_sample_follows_probabilities_and_seed() -> None:
    probs = np.tile(np.array([0.1, 0.5, 0.9], np.float32), (4000, 1))
    a = choose(probs, "sample", 3)
    np.testing.assert_array_equal(a, choose(probs, "sample", 3))
    np.testing.assert_allclose(a.mean(axis=0), [0.1, 0.5, 0.9], atol=0.03)
    assert choose(np.zeros((5, 2)), "sample", 1).sum() == 0
    assert choose(np.ones((5, 2)), "sample", 1).min() == 1
    with pytest.raises(InputError, match="mode"):
        choose(probs, "argmax", None)


def test_rank_keeps_the_most_probable_round_c_k() -> None:
    probs = np.array([[0.1, 0.9, 0.3, 0.8], [0.6, 0.2, 0.7, 0.1], [0.5, 0.5, 0.5, 0.5]], np.float32)
    budget = np.array([0.5, 0.3, 0.75])
    # 0.5 x 4 = 2: components 1 and 3; 0.3 x 4 = 1.2 -> 1: component 2; 3 of equal ones: 0..2
    assert choose(probs, "rank", None, budget).tolist() == [
        [0, 1, 0, 1],
        [0, 0, 1, 0],
        [1, 1, 1, 0],
    ]


def test_rank_counts_round_to_nearest_with_ties_down() -> None:
    budget = np.array([0.0, 0.05, 0.06, 0.5, 0.55, 1.0])
    # x 9: 0, 0.45, 0.54, 4.5 (tie: down to 4), 4.95, 9
    assert rank_counts(budget, 9).tolist() == [0, 0, 1, 4, 5, 9]
    assert rank_counts(np.array([0.375]), 4).tolist() == [1]  # 1.5 -> 1: never over by half


def test_rank_needs_a_budget() -> None:
    with pytest.raises(InputError, match="give a budget"):
        choose(np.full((1, 3), 0.5, np.float32), "rank", None)


def test_cap_drops_least_probable_first() -> None:
    model = CostModel(np.ones(4), 0.0, 4.0)
    mask = np.array([[1, 1, 1, 1]], np.uint8)
    probs = np.array([[0.9, 0.6, 0.8, 0.7]])
    assert cap(mask, probs, np.array([0.5]), model).tolist() == [[1, 0, 1, 0]]
    assert cap(mask, probs, np.array([0.75]), model).tolist() == [[1, 0, 1, 1]]
    assert cap(mask, probs, np.array([0.0]), model).tolist() == [[0, 0, 0, 0]]


def test_cap_flops_uses_component_costs_and_floor() -> None:
    # base 10, components 10/40/50: full 110
    model = CostModel(np.array([10.0, 40.0, 50.0]), 10.0, 110.0)
    mask = np.array([[1, 1, 1]], np.uint8)
    probs = np.array([[0.2, 0.9, 0.6]])
    # c = 0.6: 66 allowed; drop comp 0 (-> 100), then comp 2 (-> 50)
    assert cap(mask, probs, np.array([0.6]), model).tolist() == [[0, 1, 0]]
    # below the floor 10/110 everything goes
    assert cap(mask, probs, np.array([0.05]), model).tolist() == [[0, 0, 0]]


def test_cap_tolerates_float_rounding() -> None:
    model = CostModel(np.ones(10), 0.0, 10.0)
    mask = np.ones((1, 10), np.uint8)
    out = cap(mask, np.linspace(0.1, 1.0, 10)[None], np.array([0.7]), model)
    assert out.sum() == 7  # 0.7 * 10 = 7.000000000000001 must not cost a component


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0), st.booleans())
def test_cap_property(k: int, seed: int, budget: float, flops: bool) -> None:
    """Within budget (or all dropped), a subset of the input, and a dropped
    component never outranks a kept one."""
    rng = np.random.default_rng(seed)
    weights = rng.integers(1, 100, k).astype(float) if flops else np.ones(k)
    base = float(rng.integers(0, 50)) if flops else 0.0
    model = CostModel(weights, base, base + weights.sum())
    mask = (rng.random((1, k)) < 0.7).astype(np.uint8)
    probs = rng.random((1, k))
    out = cap(mask, probs, np.array([budget]), model)
    assert (out <= mask).all()
    assert model.cost(out)[0] <= budget + 1e-9 or out.sum() == 0
    dropped = (mask == 1) & (out == 0)
    if dropped.any() and out.any():
        assert probs[dropped].max() <= probs[out == 1].min()


def test_cost_model_errors(resnet_artifact: Any) -> None:
    m = resnet_artifact.manifest
    assert CostModel.for_cap("components", m).total == 3
    fm = CostModel.for_cap("flops", m)
    assert fm.total == m.full_flops
    assert fm.base == m.base_flops
    with pytest.raises(InputError, match="cap 'joules'"):
        CostModel.for_cap("joules", m)


def test_projection_and_check_on_prefix_blocks(resnext_artifact: Any) -> None:
    m = resnext_artifact.manifest
    idx = m.block_components(1)  # the 5-path 'prefix' block: components 3..7
    mask = np.ones((3, m.num_components), np.uint8)
    mask[0, idx] = [0, 1, 0, 1, 1]
    mask[1, idx] = [0, 0, 0, 0, 0]
    mask[2, :3] = [0, 1, 0]  # the 'all' block: left alone
    out = project_to_variants(mask, prefix_blocks(m))
    assert out[0, idx].tolist() == [1, 1, 1, 0, 0]
    assert out[1, idx].tolist() == [0, 0, 0, 0, 0]
    assert out[2].tolist() == mask[2].tolist()
    check_variants(out, m)  # every row now has a graph
    with pytest.raises(InputError, match=r"mask row 0 keeps paths \[1, 3, 4\] of block 1"):
        check_variants(mask, m)


def test_projection_is_a_no_op_without_prefix_blocks(resnet_artifact: Any) -> None:
    mask = np.array([[1, 0, 1]], np.uint8)
    assert prefix_blocks(resnet_artifact.manifest) == []
    assert project_to_variants(mask, []) is mask
