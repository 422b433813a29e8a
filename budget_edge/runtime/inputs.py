"""Checking and normalising what a caller hands to `BudgetRuntime.infer`.

Device software must never be surprised by its input: every malformed image
batch, budget or mask raises InputError saying what was wrong and what to pass
instead, before any graph runs.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from budget_edge.errors import InputError
from budget_edge.runtime.manifest import Preprocessing


def prepare_images(images: Any, pre: Preprocessing) -> np.ndarray:
    """Return a contiguous float32 NCHW batch.

    float32 (N, C, H, W) is taken as already preprocessed. uint8 (N, H, W, C),
    or (N, H, W) / (H, W) for one channel, is normalised as
    (pixel / 255 - mean) / std per channel.
    """
    images = plain_array(images, "images")
    c, h, w = pre.input_size
    if images.dtype == np.uint8:
        x = _uint8_to_nhwc(images, c, (h, w))
        if x.shape[1:3] != (h, w):
            raise InputError(
                f"images are {x.shape[1]}x{x.shape[2]} pixels but the model takes "
                f"{h}x{w}: resize them first"
            )
        _check_batch(x.shape[0])
        return _normalise(x, pre)
    if images.dtype == np.float32:
        if images.ndim != 4:
            raise InputError(
                f"float32 images must be a preprocessed NCHW batch of rank 4, got "
                f"shape {images.shape}: add a batch axis (images[None]) or pass "
                "uint8 pixels"
            )
        if images.shape[1] != c:
            raise InputError(
                f"float32 images are read as NCHW with {c} channel(s), got shape "
                f"{images.shape}: expected (N, {c}, {h}, {w}); for NHWC pixels "
                "pass uint8"
            )
        if images.shape[2:] != (h, w):
            raise InputError(
                f"images are {images.shape[2]}x{images.shape[3]} but the model "
                f"takes {h}x{w}: resize them first"
            )
        _check_batch(images.shape[0])
        if not np.isfinite(images).all():
            raise InputError("images contain NaN or inf: check the preprocessing that made them")
        return np.ascontiguousarray(images)
    raise InputError(
        f"images have dtype {images.dtype}; pass uint8 pixels (NHWC) or float32 "
        "preprocessed NCHW (for example images.astype(np.float32))"
    )


def pixels_nhwc(images: Any, pre: Preprocessing) -> np.ndarray | None:
    """uint8 images checked and viewed as a contiguous NHWC batch (for a backend that
    normalises on the device), or None when they are not uint8."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        return None
    images = plain_array(images, "images")
    c, h, w = pre.input_size
    x = _uint8_to_nhwc(images, c, (h, w))
    if x.shape[1:3] != (h, w):
        raise InputError(
            f"images are {x.shape[1]}x{x.shape[2]} pixels but the model takes "
            f"{h}x{w}: resize them first"
        )
    _check_batch(x.shape[0])
    return np.ascontiguousarray(x)


def plain_array(value: Any, what: str) -> np.ndarray:
    """``value`` as a plain ndarray. Subclasses that keep ndarray's meaning (np.memmap) are
    viewed as one; those that change it are refused: np.matrix is always 2-D and indexes
    differently, and a masked array's hidden values would be run as if they were pixels."""
    if isinstance(value, np.ma.MaskedArray):
        raise InputError(
            f"{what} is a numpy masked array: its masked values would be "
            f"used as they are; fill them first ({what}.filled(0))"
        )
    if isinstance(value, np.matrix):
        raise InputError(
            f"{what} is a numpy matrix, which is always 2-D: pass "
            f"np.asarray({what}) reshaped to the batch"
        )
    if not isinstance(value, np.ndarray):
        raise InputError(
            f"{what} must be a numpy array, got {type(value).__name__}: "
            "pass np.asarray(images) as uint8 NHWC or float32 NCHW"
        )
    return value if type(value) is np.ndarray else value.view(np.ndarray)


def scale_and_shift(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(pixel / 255 - mean) / std = pixel * scale - shift, each (1, C, 1, 1) float32."""
    std = np.asarray(pre.std, np.float64)
    mean = np.asarray(pre.mean, np.float64)
    shape = (1, len(std), 1, 1)
    return (
        (1.0 / (255.0 * std)).astype(np.float32).reshape(shape),
        (mean / std).astype(np.float32).reshape(shape),
    )


def _uint8_to_nhwc(images: np.ndarray, c: int, hw: tuple[int, int]) -> np.ndarray:
    if images.ndim == 3 and images.shape == (*hw, c):
        # Read as NHW this would be H images of W x 1 pixels: it is one HWC frame.
        raise InputError(
            f"a uint8 array of shape {images.shape} is one HWC frame, but infer takes a "
            "batch: add a batch axis with frame[None]"
        )
    if images.ndim == 4:
        if images.shape[3] != c:
            raise InputError(
                f"uint8 images are read as NHWC with {c} channel(s), got shape {images.shape}"
            )
        return images
    if images.ndim in (2, 3):
        if c != 1:
            raise InputError(
                f"uint8 images of rank {images.ndim} (shape {images.shape}) are "
                f"read as one-channel HW/NHW, but the model takes {c} channels: "
                "pass an NHWC batch (add a batch axis with images[None])"
            )
        x = images if images.ndim == 3 else images[None]
        return x[..., None]
    raise InputError(
        f"uint8 images must have rank 4 (NHWC), or 3 (NHW) / 2 (HW) for one "
        f"channel; got shape {images.shape}"
    )


def _check_batch(n: int) -> None:
    if n == 0:
        raise InputError("the batch is empty: pass at least one image")


def _normalise(x: np.ndarray, pre: Preprocessing) -> np.ndarray:
    # One multiply-add per pixel: (p / 255 - mean) / std = p * a + b
    a, b = _scale_offset(tuple(pre.mean), tuple(pre.std))
    out = x.astype(np.float32)
    out *= a
    out += b
    if out.shape[3] == 1:  # NHWC with one channel is already NCHW in memory
        return out.reshape(out.shape[0], 1, out.shape[1], out.shape[2])
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


@functools.lru_cache(maxsize=8)
def _scale_offset(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of `_normalise`, per channel, computed once per preprocessing (at batch 1
    the few numpy calls cost as much as the multiply-add)."""
    s = np.asarray(std, np.float32)
    return 1.0 / (255.0 * s), -np.asarray(mean, np.float32) / s


def prepare_budget(budget: Any, n: int) -> np.ndarray:
    """A float or one value per image, each in [0, 1] -> float32 (n,)."""
    if budget is None:
        raise InputError(
            "a budget is needed to run the policy: pass budget=0.5 (a float in "
            "[0, 1], or one per image), or give an explicit mask"
        )
    if isinstance(budget, (bool, np.bool_)):
        raise InputError("budget must be a number in [0, 1], got a bool")
    if type(budget) in (float, int) and 0 <= budget <= 1:  # the common case, ~1 us not 15
        return np.full(n, budget, np.float32)
    if isinstance(budget, (np.ma.MaskedArray, np.matrix)):
        plain_array(budget, "budget")  # refuses them, saying why
    try:
        given = np.asarray(budget)
        # "0.5" would convert silently, 1j with a warning, and True would be budget 1.0
        if given.dtype.kind not in "iuf":
            raise TypeError(f"dtype {given.dtype}")
        b = given.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"budget must be a number in [0, 1] or a list of them, got {budget!r}"
        ) from exc
    if b.ndim == 0:
        b = np.full(n, float(b))
    if b.ndim != 1 or b.shape[0] != n:
        raise InputError(
            f"budget has shape {b.shape} for {n} image(s): pass one float, or one value per image"
        )
    if not np.isfinite(b).all():
        raise InputError("budget contains NaN or inf: pass values in [0, 1]")
    if (b < 0).any() or (b > 1).any():
        bad = b[(b < 0) | (b > 1)][0]
        raise InputError(
            f"budget {bad:g} is outside [0, 1]: it is the fraction of the model to use"
        )
    return b.astype(np.float32)


def prepare_mask(mask: Any, n: int, k: int) -> np.ndarray:
    """A (K,) mask for every image or an (N, K) mask, of 0/1 or bools -> uint8 (n, k)."""
    if isinstance(mask, (np.ma.MaskedArray, np.matrix)):
        plain_array(mask, "mask")  # refuses them, saying why
    try:
        m = np.asarray(mask)
    except (TypeError, ValueError) as exc:
        raise InputError(f"mask must be an array of 0/1 of shape ({n}, {k})") from exc
    if m.ndim == 1 and m.shape[0] == k:
        # One row needs no broadcast (np.broadcast_to costs ~8 us at batch 1).
        m = m.reshape(1, k) if n == 1 else np.broadcast_to(m, (n, k))
    if m.shape != (n, k):
        raise InputError(
            f"mask has shape {m.shape} but {n} image(s) and {k} components need "
            f"({n}, {k}) or ({k},)"
        )
    if m.dtype == np.bool_:
        return m.astype(np.uint8)
    if m.dtype.kind not in "iuf":
        raise InputError(f"mask must hold 0/1 or bools, got dtype {m.dtype}")
    # Unsigned integers hold 0/1 when their max does (one reduction); np.isin costs
    # ~20 us on a batch-1 mask.
    valid = m.max() <= 1 if m.dtype.kind == "u" else ((m == 0) | (m == 1)).all()
    if not valid:
        raise InputError("mask must hold only 0 and 1 (1: run the component, 0: skip it)")
    return m.astype(np.uint8)
