"""Best static masks: greedy backward elimination through the runtime, and budget lookup."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from budget_edge.errors import InputError
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.static_masks import (
    StaticMask,
    attach_static_masks,
    for_budget,
    mask_accuracy,
    search_static_masks,
)


@pytest.fixture(scope="module")
def rt(resnet_artifact: Any) -> BudgetRuntime:
    return BudgetRuntime.load(resnet_artifact.path, backend="onnxruntime", threads=1)


def _labelled(rt: BudgetRuntime, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    c, h, w = rt.manifest.preprocessing.input_size
    images = np.random.default_rng(1).integers(0, 256, (n, h, w, c), dtype=np.uint8)
    # Labels from one fixed mask: the search must find a mask at least that good.
    labels = rt.infer(images, mask=np.tile([1, 0, 1], (n, 1))).classes
    return images, labels


def test_mask_accuracy_counts_correct_images(rt: BudgetRuntime) -> None:
    images, labels = _labelled(rt)
    assert mask_accuracy(rt, images, labels, np.array([1, 0, 1], np.uint8), batch=7) == 1.0
    wrong = (labels + 1) % rt.num_classes
    assert mask_accuracy(rt, images, wrong, np.array([1, 0, 1], np.uint8)) == 0.0


def test_search_is_greedy_backward_elimination(rt: BudgetRuntime) -> None:
    images, labels = _labelled(rt)
    found = search_static_masks(rt, images, labels, batch=16)
    k = rt.num_components
    assert [m.kept for m in found] == list(range(k, -1, -1))
    assert found[0].mask == (1,) * k
    assert found[0].flops_share == pytest.approx(1.0)
    for bigger, smaller in itertools.pairwise(found):
        # Each step drops exactly one component of the previous mask.
        diff = np.array(bigger.mask) - np.array(smaller.mask)
        assert diff.min() == 0
        assert diff.sum() == 1
        assert smaller.flops_share < bigger.flops_share
    # With two components the labelling mask [1, 0, 1] scores 100%: the search must
    # reach it (dropping component 1 first is the only step that keeps 100%).
    two = next(m for m in found if m.kept == 2)
    assert two.accuracy == 1.0
    assert two.accuracy == mask_accuracy(rt, images, labels, np.array(two.mask, np.uint8))


def test_search_respects_prefix_blocks(resnext_artifact: Any) -> None:
    rt = BudgetRuntime.load(resnext_artifact.path, backend="onnxruntime", threads=1)
    c, h, w = rt.manifest.preprocessing.input_size
    images = np.random.default_rng(2).integers(0, 256, (20, h, w, c), dtype=np.uint8)
    labels = rt.run_full(images).argmax(axis=1)
    found = search_static_masks(rt, images, labels)
    assert found[-1].kept == 0
    for m in found:  # every mask runs (prefix-scheme blocks keep a prefix of paths)
        rt.infer(images[:1], mask=np.array(m.mask, np.uint8)[None])


def test_search_needs_labelled_images(rt: BudgetRuntime) -> None:
    images, labels = _labelled(rt, 4)
    with pytest.raises(InputError, match="labelled images"):
        search_static_masks(rt, images, labels[:3])
    with pytest.raises(InputError, match="labelled images"):
        search_static_masks(rt, images[:0], labels[:0])


def test_for_budget_picks_round_c_k_components() -> None:
    masks = [StaticMask(k, (1,) * k + (0,) * (4 - k), 0.9, k / 4) for k in (4, 3, 2, 1)]
    assert for_budget(masks, 0.5, 4).kept == 2
    assert for_budget(masks, 0.6, 4).kept == 2  # round(2.4)
    assert for_budget(masks, 1.0, 4).kept == 4
    assert for_budget(masks, 0.0, 4).kept == 1  # fewer than found: the smallest there is
    with pytest.raises(InputError, match="no static masks"):
        for_budget([], 0.5, 4)


def test_attached_masks_run_with_policy_static(tmp_path: Any) -> None:
    from .conftest import make_net, write_artifact

    net = make_net("resnet")
    write_artifact(net, tmp_path, policy=False)  # no agent: static masks still give budgets
    with BudgetRuntime.load(tmp_path, backend="onnxruntime", threads=1) as rt:
        images, labels = _labelled(rt)
    manifest = attach_static_masks(tmp_path, images, labels, "synthetic")
    assert manifest.static_masks is not None
    assert manifest.static_masks.source == "synthetic, greedy backward elimination"
    assert [sum(s.mask) for s in manifest.static_masks.masks] == [3, 2, 1, 0]
    with BudgetRuntime.load(tmp_path, backend="onnxruntime", threads=1) as rt:
        assert rt.has_static_masks
        assert not rt.has_policy
        budgets = np.array([0.0, 0.3, 0.5, 0.7, 1.0], np.float32)
        x = images[:5]
        result = rt.infer(x, budget=budgets, policy="static")
        by_count = {sum(s.mask): s.mask for s in manifest.static_masks.masks}
        for row, count in zip(result.mask, (0, 1, 1, 2, 3), strict=True):
            assert tuple(row) == tuple(by_count[count])
        assert result.probs is None
        np.testing.assert_allclose(
            result.logits, net.np_forward(_float(rt, x), result.mask), atol=1e-4, rtol=1e-4
        )
        with pytest.raises(InputError, match="cap needs"):
            rt.infer(x, budget=0.5, policy="static", cap="components")
        with pytest.raises(InputError, match="policy 'oracle'"):
            rt.infer(x, budget=0.5, policy="oracle")


def test_policy_static_without_masks_says_how_to_get_them(rt: BudgetRuntime) -> None:
    x = np.zeros((1, *rt.manifest.preprocessing.input_size), np.float32)
    with pytest.raises(InputError, match="--static-masks"):
        rt.infer(x, budget=0.5, policy="static")


def _float(rt: BudgetRuntime, x: np.ndarray) -> np.ndarray:
    from budget_edge.runtime.inputs import prepare_images

    return prepare_images(x, rt.manifest.preprocessing)
