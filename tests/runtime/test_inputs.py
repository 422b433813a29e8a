"""Input checking: every malformed image batch, budget or mask is a clear InputError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from budget_edge.errors import InputError
from budget_edge.runtime.inputs import prepare_budget, prepare_images, prepare_mask
from budget_edge.runtime.manifest import Preprocessing

RGB = Preprocessing(mean=[0.5, 0.4, 0.3], std=[0.25, 0.2, 0.1], input_size=[3, 8, 6])
GRAY = Preprocessing(mean=[0.5], std=[0.25], input_size=[1, 8, 6])


def test_uint8_nhwc_is_normalised_per_channel() -> None:
    px = np.random.default_rng(0).integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    x = prepare_images(px, RGB)
    assert x.dtype == np.float32
    assert x.shape == (2, 3, 8, 6)
    assert x.flags.c_contiguous
    expected = (px / 255.0 - np.array(RGB.mean)) / np.array(RGB.std)
    np.testing.assert_allclose(x, expected.transpose(0, 3, 1, 2), atol=1e-5)


def test_uint8_one_channel_shapes() -> None:
    px = np.random.default_rng(1).integers(0, 256, (4, 8, 6), dtype=np.uint8)
    nhw = prepare_images(px, GRAY)
    assert nhw.shape == (4, 1, 8, 6)
    np.testing.assert_allclose(prepare_images(px[2], GRAY), nhw[2:3])
    np.testing.assert_allclose(prepare_images(px[..., None], GRAY), nhw)


def test_float32_is_taken_as_preprocessed() -> None:
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 6)).astype(np.float32)
    out = prepare_images(x, RGB)
    np.testing.assert_array_equal(out, x)
    assert out.flags.c_contiguous
    strided = np.asfortranarray(x)
    assert prepare_images(strided, RGB).flags.c_contiguous


def _nan_images() -> np.ndarray:
    x = np.zeros((2, 3, 8, 6), np.float32)
    x[1, 2, 3, 4] = np.nan
    return x


def _inf_images() -> np.ndarray:
    x = np.zeros((2, 3, 8, 6), np.float32)
    x[0, 0, 0, 0] = -np.inf
    return x


IMAGE_ERRORS: list[tuple[str, Any, Preprocessing, str]] = [
    ("list", [[1, 2]], RGB, "numpy array"),
    ("float64", np.zeros((1, 3, 8, 6)), RGB, "dtype float64"),
    ("int32", np.zeros((1, 8, 6, 3), np.int32), RGB, "dtype int32"),
    ("float rank 3", np.zeros((3, 8, 6), np.float32), RGB, "rank 4"),
    ("float rank 5", np.zeros((1, 1, 3, 8, 6), np.float32), RGB, "rank 4"),
    ("float NHWC", np.zeros((1, 8, 6, 3), np.float32), RGB, "NCHW with 3 channel"),
    ("float size", np.zeros((1, 3, 8, 8), np.float32), RGB, "8x8 but the model takes 8x6"),
    ("uint8 channels", np.zeros((1, 8, 6, 1), np.uint8), RGB, "NHWC with 3 channel"),
    ("uint8 size", np.zeros((1, 6, 8, 3), np.uint8), RGB, "6x8 pixels"),
    ("uint8 one colour frame", np.zeros((8, 6, 3), np.uint8), RGB, r"frame\[None\]"),
    ("uint8 one gray frame", np.zeros((8, 6, 1), np.uint8), GRAY, r"one HWC frame.*frame\[None\]"),
    ("uint8 rank 3 colour", np.zeros((2, 8, 6), np.uint8), RGB, "one-channel"),
    ("uint8 rank 1", np.zeros(8, np.uint8), GRAY, "rank 4"),
    ("uint8 rank 5", np.zeros((1, 1, 8, 6, 1), np.uint8), GRAY, "rank 4"),
    ("empty uint8", np.zeros((0, 8, 6, 3), np.uint8), RGB, "empty"),
    ("empty float", np.zeros((0, 3, 8, 6), np.float32), RGB, "empty"),
    ("nan", _nan_images(), RGB, "NaN or inf"),
    ("inf", _inf_images(), RGB, "NaN or inf"),
]


@pytest.mark.parametrize("case,images,pre,message", IMAGE_ERRORS, ids=[c[0] for c in IMAGE_ERRORS])
def test_image_errors(case: str, images: Any, pre: Preprocessing, message: str) -> None:
    with pytest.raises(InputError, match=message):
        prepare_images(images, pre)


def test_budget_forms() -> None:
    np.testing.assert_array_equal(prepare_budget(0.5, 3), [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(prepare_budget(1, 2), [1.0, 1.0])
    np.testing.assert_allclose(prepare_budget([0.0, 0.25, 1.0], 3), [0.0, 0.25, 1.0])
    np.testing.assert_allclose(prepare_budget(np.float64(0.3), 1), [0.3])
    assert prepare_budget(0.5, 2).dtype == np.float32


BUDGET_ERRORS: list[tuple[str, Any, str]] = [
    ("none", None, "budget is needed"),
    ("nan", float("nan"), "NaN"),
    ("inf in list", [0.5, float("inf")], "NaN or inf"),
    ("negative", -0.01, "outside"),
    ("above one", 1.01, "outside"),
    ("one bad in list", [0.5, 2.0], "budget 2 is outside"),
    ("wrong length", [0.5, 0.5, 0.5], "one value per image"),
    ("2-d", [[0.5, 0.5]], "one value per image"),
    ("text", "half", "number"),
    ("a number as text", "0.5", "number"),  # numpy would convert it silently
    ("complex", 0.5j, "number"),
    ("bool", True, "bool"),
]


@pytest.mark.parametrize("case,budget,message", BUDGET_ERRORS, ids=[c[0] for c in BUDGET_ERRORS])
def test_budget_errors(case: str, budget: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        prepare_budget(budget, 2)


def test_mask_forms() -> None:
    np.testing.assert_array_equal(prepare_mask([1, 0, 1], 2, 3), [[1, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(
        prepare_mask(np.array([[True, False, True]] * 2), 2, 3), [[1, 0, 1]] * 2
    )
    m = prepare_mask(np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), 2, 3)
    assert m.dtype == np.uint8
    assert m.tolist() == [[1, 0, 1], [0, 0, 0]]
    one = prepare_mask(np.array([0, 1, 1], np.uint8), 1, 3)  # one image: a (1, K) row
    assert one.shape == (1, 3)
    assert one.tolist() == [[0, 1, 1]]


MASK_ERRORS: list[tuple[str, Any, str]] = [
    ("short", [1, 0], r"shape \(2,\)"),
    ("rows", [[1, 0, 1]] * 3, r"shape \(3, 3\)"),
    ("3-d", np.ones((2, 3, 1)), "shape"),
    ("two", [[1, 0, 2], [1, 1, 1]], "only 0 and 1"),
    ("uint8 two", np.array([[1, 0, 1], [1, 255, 1]], np.uint8), "only 0 and 1"),
    ("negative", [-1, 0, 1], "only 0 and 1"),
    ("half", [0.5, 1, 1], "only 0 and 1"),
    ("nan", [float("nan"), 1, 1], "only 0 and 1"),
    ("text", ["a", "b", "c"], "dtype"),
    ("ragged", [[1, 0], [1]], "mask"),
]


@pytest.mark.parametrize("case,mask,message", MASK_ERRORS, ids=[c[0] for c in MASK_ERRORS])
def test_mask_errors(case: str, mask: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        prepare_mask(mask, 2, 3)


def test_array_subclasses_that_change_meaning_are_refused() -> None:
    px = np.zeros((1, 8, 6), np.uint8)
    hidden = np.ma.masked_array(px, mask=px == 0)
    with pytest.raises(InputError, match=r"masked array: .* \(images.filled\(0\)\)"):
        prepare_images(hidden, GRAY)
    with pytest.raises(InputError, match="numpy matrix"):
        prepare_images(np.matrix(np.zeros((8, 6), np.uint8)), GRAY)
    with pytest.raises(InputError, match="budget is a numpy masked array"):
        prepare_budget(np.ma.masked_array([0.5], mask=[True]), 1)
    with pytest.raises(InputError, match="mask is a numpy matrix"):
        prepare_mask(np.matrix([[1, 0, 1]]), 1, 3)


def test_a_memmap_is_read_as_the_array_it_is(tmp_path: Any) -> None:
    px = np.random.default_rng(3).integers(0, 256, (2, 8, 6), dtype=np.uint8)
    mapped = np.memmap(tmp_path / "px", np.uint8, "w+", shape=px.shape)
    mapped[:] = px
    np.testing.assert_array_equal(prepare_images(mapped, GRAY), prepare_images(px, GRAY))


@pytest.mark.parametrize("budget", [[True], np.array([True, False]), np.bool_(True)])
def test_bools_are_not_budgets(budget: Any) -> None:
    with pytest.raises(InputError, match="budget must be a number"):
        prepare_budget(budget, len(np.atleast_1d(budget)))
