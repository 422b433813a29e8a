"""One inference request: decisions checked when made, chunks that keep their rows."""

from __future__ import annotations

import numpy as np
import pytest

from budget_edge.errors import InputError
from budget_edge.runtime import BudgetRuntime, InferResult
from budget_edge.runtime.request import (
    Agent,
    InferenceRequest,
    Mask,
    Static,
    decision_from_options,
)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "fast"}, "mode 'fast' is not one of"),
        ({"cap": "joules"}, "cap 'joules' is not one of"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": True}, "seed must be a non-negative integer"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
        ({"policy": "oracle"}, "policy 'oracle' is not one of"),
        ({"policy": "static", "cap": "flops"}, "cap needs the agent's probabilities"),
        ({"policy": "static", "mode": "allocate"}, "mode 'allocate' ranks the agent's"),
        ({"mask": [1, 0], "mode": "greedy"}, "so mode would be ignored"),
        ({"mask": [1, 0], "seed": 0, "cap": "flops"}, "so seed, cap would be ignored"),
        ({"mask": [1, 0], "policy": "static"}, "so policy would be ignored"),
    ],
)
def test_options_that_cannot_mean_anything_are_refused(options, message) -> None:
    with pytest.raises(InputError, match=message):
        decision_from_options(**options)


def test_options_become_the_decision_they_name() -> None:
    assert decision_from_options() == Agent()
    assert decision_from_options(mode="sample", seed=3, cap="flops") == Agent("sample", 3, "flops")
    assert decision_from_options(policy="static") == Static()
    mask = decision_from_options(mask=[1, 0])
    assert isinstance(mask, Mask)
    assert list(mask.components) == [1, 0]  # type: ignore[call-overload]


def test_a_mask_with_a_budget_is_refused() -> None:
    with pytest.raises(InputError, match="give a budget or a mask, not both"):
        InferenceRequest(np.zeros((1, 4, 4), np.uint8), 0.5, Mask([1, 0]))


def test_a_budget_is_given_only_where_one_is_needed() -> None:
    images = np.zeros((2, 4, 4), np.uint8)
    assert InferenceRequest(images).with_budget(0.3).budget == 0.3
    assert InferenceRequest(images, 0.7).with_budget(0.3).budget == 0.7
    assert InferenceRequest(images, decision=Mask([1, 0])).with_budget(0.3).budget is None


def test_chunks_keep_each_images_budget_and_mask() -> None:
    images = np.arange(5)[:, None, None, None] * np.ones((5, 4, 4, 1), np.uint8)
    budgets = np.linspace(0, 1, 5)
    parts = InferenceRequest(images, budgets, Agent("greedy")).split(2)
    assert [len(p.images) for p in parts] == [2, 2, 1]  # type: ignore[arg-type]
    np.testing.assert_array_equal(np.concatenate([p.budget for p in parts]), budgets)  # type: ignore[misc]
    np.testing.assert_array_equal(np.concatenate([p.images for p in parts]), images)  # type: ignore[misc]
    masks = np.eye(5, 3, dtype=np.uint8)
    parts = InferenceRequest(images, decision=Mask(masks)).split(2)
    rows = [p.decision.components for p in parts]  # type: ignore[union-attr]
    np.testing.assert_array_equal(np.concatenate(rows), masks)
    one_mask = InferenceRequest(images, decision=Mask([1, 1, 0])).split(2)
    assert all(list(p.decision.components) == [1, 1, 0] for p in one_mask)  # type: ignore[union-attr]
    assert InferenceRequest(images, 0.5, Agent("greedy")).split(2)[1].budget == 0.5


@pytest.mark.parametrize(
    "request_",
    [
        # Its draws depend on each image's row in the batch: chunks would change them.
        InferenceRequest(np.zeros((5, 4, 4, 1), np.uint8), 0.5, Agent("sample", seed=1)),
        # The artifact's own mode might be "sample".
        InferenceRequest(np.zeros((5, 4, 4, 1), np.uint8), 0.5, Agent()),
        # One HW frame: its first axis is a row of pixels, not a batch.
        InferenceRequest(np.zeros((28, 28), np.uint8), 0.5, Agent("greedy")),
        # Budgets of another count: the runtime reports it against all 5 images.
        InferenceRequest(np.zeros((5, 4, 4, 1), np.uint8), np.ones(4) / 2, Agent("greedy")),
        InferenceRequest(np.zeros((5, 4, 4, 1), np.uint8), decision=Mask(np.ones((3, 2)))),
    ],
)
def test_what_chunks_would_change_runs_whole(request_: InferenceRequest) -> None:
    assert request_.split(2) == [request_]


def test_a_decision_of_another_kind_is_refused() -> None:
    with pytest.raises(InputError, match=r"decision must be Agent\(...\), Static\(\) or Mask"):
        InferenceRequest(np.zeros((1, 4, 4, 1), np.uint8), 0.5, "greedy")  # type: ignore[arg-type]


def _result(rows: int, start: int, probs: bool) -> InferResult:
    k = 3
    return InferResult(
        logits=np.arange(start, start + rows * 2, dtype=np.float32).reshape(rows, 2),
        classes=np.full(rows, start, np.int64),
        mask=np.ones((rows, k), np.uint8),
        probs=np.full((rows, k), start, np.float32) if probs else None,
        flops=np.full(rows, start, np.int64),
        latency_ms={"total": 1.5, "policy": 0.5},
    )


def test_results_concatenate_in_order_and_latencies_add_up() -> None:
    merged = InferResult.concat([_result(2, 0, True), _result(1, 10, True)])
    np.testing.assert_array_equal(merged.classes, [0, 0, 10])
    np.testing.assert_array_equal(merged.logits[:, 0], [0, 2, 10])
    assert merged.probs is not None
    np.testing.assert_array_equal(merged.probs[:, 0], [0, 0, 10])
    assert merged.latency_ms == {"total": 3.0, "policy": 1.0}
    without = InferResult.concat([_result(2, 0, False), _result(1, 10, False)])
    assert without.probs is None
    with pytest.raises(ValueError, match="no results"):
        InferResult.concat([])


def test_a_request_in_chunks_answers_as_the_whole_request(resnet_artifact) -> None:
    """What the server does with a large request: chunks, then InferResult.concat."""
    rng = np.random.default_rng(0)
    c, h, w = resnet_artifact.net.input_size
    x = rng.integers(0, 256, (7, h, w, c), np.uint8)
    budgets = rng.uniform(size=7).astype(np.float32)
    with BudgetRuntime.load(resnet_artifact.path, threads=1) as rt:
        for request in [
            InferenceRequest(x, budgets, Agent("greedy")),
            InferenceRequest(x, budgets, Agent("rank", cap="flops")),
            InferenceRequest(x, decision=Mask(rng.integers(0, 2, (7, rt.num_components)))),
        ]:
            whole = rt.run(request)
            parts = request.split(3)
            assert len(parts) == 3
            merged = InferResult.concat([rt.run(part) for part in parts])
            for field in ("logits", "classes", "mask", "flops", "probs"):
                np.testing.assert_array_equal(getattr(merged, field), getattr(whole, field))
