"""Spend the budget where it pays: per-image counts of components (mode ``allocate``).

The agent's own decisions collapse to a schedule from budget to mask on the
backbones trained here (docs/budgetnet.md): its reward (Eq. 4) punishes any
image whose usage is off c, so every image runs the same number of components.
Yet most images are easy: a trouser is classified with three blocks, a shirt
needs nine. The allocator is a small network that predicts, for each count k
of kept components, the chance that the backbone is right with the agent's
k most probable components. At budget c the runtime gives each image the count
that maximises

    chance(k) - price(c) * k / K

where ``price(c)`` is calibrated on held-out training images so that the
*mean* usage over images is at most c (a Lagrange multiplier of the budget).
Which components run is still the agent's choice: the allocator's table of
count masks (row k: the agent's most common top-k mask at budget k / K on
held-out training images), or, for allocators made before the table, the
agent's ranking of each image at budget k / K.

So under ``allocate`` the budget is an average over images like the
calibration set, not a per-image ceiling: single images run more or fewer
components than c K. That is what a battery needs (energy is an average);
a latency deadline per image wants ``rank`` or a ``cap``.

Torch-free: the runtime, the calibration on the torch side and the tests
share these functions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from budget_edge.errors import InputError

# Bisection steps for one price: the price is known to within 2^-60 of its range.
_STEPS = 60
# Budgets this close under a calibrated budget count as that budget: far above float32
# rounding (6e-8 at 1.0), far below the table's step (0.05).
BUDGET_TOLERANCE = 1e-6


def counts_for(chances: np.ndarray, price: np.ndarray) -> np.ndarray:
    """(N,) int64: each image's count k maximising chances[i, k] - price[i] * k / K.

    chances: (N, K + 1) probabilities that the backbone is right with k components.
    Ties go to the smaller count (argmax takes the first).
    """
    gain = chances.astype(np.float64) - price.reshape(-1, 1) * _levels(chances.shape[1])
    return gain.argmax(axis=1).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _levels(count: int) -> np.ndarray:
    """(1, K + 1): k / K for every count (cached: mode 'allocate' calls this per image)."""
    levels = (np.arange(count, dtype=np.float64) / (count - 1))[None, :]
    levels.flags.writeable = False
    return levels


def calibrate_prices(chances: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """One price per budget: the smallest whose mean usage on `chances` is at most c.

    The mean usage falls as the price rises (a higher price never raises a count),
    so a bisection finds it. The prices returned never rise with the budget.
    """
    chances = np.asarray(chances, np.float64)
    if chances.ndim != 2 or chances.shape[1] < 2 or len(chances) == 0:
        raise InputError(f"calibration needs chances shaped (N, K + 1), got {chances.shape}")
    if not np.isfinite(chances).all():
        raise InputError("calibration chances hold NaN or inf")
    k = chances.shape[1] - 1
    # Above this price even one component costs more than any chance can gain.
    top = float(k) * 2.0 + 1.0
    prices = []
    for c in np.asarray(budgets, np.float64):
        lo, hi = 0.0, top
        if usage(chances, 0.0) <= c:
            prices.append(0.0)
            continue
        for _ in range(_STEPS):
            mid = (lo + hi) / 2
            if usage(chances, mid) <= c:
                hi = mid
            else:
                lo = mid
        prices.append(hi)
    return np.minimum.accumulate(np.array(prices, np.float64))


def usage(chances: np.ndarray, price: float) -> float:
    """Mean fraction of components the images of `chances` run at one price."""
    k = chances.shape[1] - 1
    counts = counts_for(chances, np.full(len(chances), price))
    return float(counts.mean()) / k


def prices_for(budget: np.ndarray, budgets: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """Each image's price: that of the largest calibrated budget at or below its budget
    (below the table: the first price). Not interpolated: usage is not linear in the
    price, and a price between two calibrated ones could overshoot the budget.

    A budget within BUDGET_TOLERANCE under a calibrated one takes that one: the runtime
    holds budgets in float32, and float32(0.7) = 0.69999999 must not fall back to the
    price of 0.65 (it did: ResNet-20 ran c = 0.7 at a mean usage of 0.655)."""
    idx = (
        np.searchsorted(budgets, np.asarray(budget, np.float64) + BUDGET_TOLERANCE, side="right")
        - 1
    )
    # searchsorted gives at most len(budgets): only a budget below the table needs a clip.
    return prices[np.maximum(idx, 0)]


def allocated_masks(
    chances: np.ndarray,
    level_probs: np.ndarray,
    budget: np.ndarray,
    budgets: np.ndarray,
    prices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The masks to run and the agent's probabilities behind them.

    chances: (N, K + 1); level_probs: (N, K + 1, K), the agent's probabilities at
    budget k / K for every k. Image i keeps the counts[i] components the agent
    ranks highest at budget counts[i] / K (ties: lower index first).
    """
    n, levels, k = level_probs.shape
    if chances.shape != (n, levels) or levels != k + 1:
        raise InputError(
            f"allocator outputs do not fit: chances {chances.shape}, "
            f"level probabilities {level_probs.shape}"
        )
    counts = counts_for(chances, prices_for(budget, budgets, prices))
    probs = level_probs[np.arange(n), counts].astype(np.float32)
    order = np.argsort(-probs, axis=1, kind="stable")
    keep = (np.arange(k)[None, :] < counts[:, None]).astype(np.uint8)
    mask = np.zeros((n, k), np.uint8)
    np.put_along_axis(mask, order, keep, axis=1)
    return mask, probs


@dataclass(frozen=True)
class CountTable:
    """The allocator's count masks (K + 1, K) uint8, row k keeping k components, and
    their keep shares: for each kept component the share of the rows that keep it
    (so the component that survives to the smallest counts goes last under a cap),
    0 where dropped. Both read once per artifact, indexed per image."""

    masks: np.ndarray
    shares: np.ndarray

    @classmethod
    def of(cls, count_masks: np.ndarray | list[list[int]]) -> CountTable:
        masks = np.asarray(count_masks, np.uint8)
        share = masks.mean(axis=0, dtype=np.float32)
        return cls(masks, np.where(masks.astype(bool), share, np.float32(0)))


def table_masks(
    chances: np.ndarray,
    table: CountTable,
    budget: np.ndarray,
    budgets: np.ndarray,
    prices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The masks to run with a table of count masks (image i runs the row of its
    count), and their keep shares, which stand in for the agent's probabilities."""
    levels, k = table.masks.shape
    if chances.ndim != 2 or chances.shape[1] != levels or levels != k + 1:
        raise InputError(
            f"allocator outputs do not fit: chances {chances.shape}, "
            f"count masks {table.masks.shape}"
        )
    counts = counts_for(chances, prices_for(budget, budgets, prices))
    return table.masks[counts], table.shares[counts]


def decide(
    outputs: list[np.ndarray],
    table: CountTable | None,
    budget: np.ndarray,
    budgets: np.ndarray,
    prices: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks and probabilities from the decision graph's outputs: (chances,) with a
    table of count masks, else (chances, level_probs)."""
    if table is not None:
        return table_masks(outputs[0], table, budget, budgets, prices)
    return allocated_masks(outputs[0], outputs[1], budget, budgets, prices)
