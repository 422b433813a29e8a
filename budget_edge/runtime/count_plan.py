"""Mode 'allocate' at batch 1, planned once per artifact: a count, then its graph.

With a table of count masks (runtime/allocation.py) and a whole-mask graph for
every row of it (`budget-edge export --fuse-top` fuses the rows first), one
image costs two graph calls: the allocator, then the graph of the count it
gives. Everything else `infer` does in general (budgets as arrays, masks
grouped by their bytes, FLOPs as a matrix product, a dozen small numpy calls)
adds up at batch 1 on a small backbone, where every call finds the caches
cold. So the plan holds, per count, the graph, the mask, the keep shares and
the FLOPs, and picks the count with the same arithmetic as
`allocation.counts_for`, in plain Python on one row: 0.04-0.12x of
ResNet-20's static graph faster than the general path
(`benchmarks/investigations/allocate_batch_one.py`, benchmarks/results/allocate-batch-one/).
Results equal the general path's bit for bit (tests/runtime/test_count_plan.py,
tests/export/test_allocator_export.py).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from budget_edge.runtime.allocation import BUDGET_TOLERANCE, CountTable
from budget_edge.runtime.masks import project_to_variants


@dataclass(frozen=True)
class CountPlan:
    """Per count k = 0..K: the graph that runs it, its mask, keep shares and FLOPs."""

    allocator: str
    graphs: tuple[str | None, ...]  # None: no whole-mask graph, the general path runs it
    masks: np.ndarray  # (K + 1, K) uint8, read-only
    shares: np.ndarray  # (K + 1, K) float32, read-only
    flops: np.ndarray  # (K + 1,) int64 executed backbone FLOPs, read-only
    levels: tuple[float, ...]  # k / K
    budgets: tuple[float, ...]  # the calibrated budgets, ascending
    prices: tuple[float, ...]

    @classmethod
    def build(
        cls,
        allocator: str,
        table: CountTable,
        whole: dict[bytes, str],
        budgets: np.ndarray,
        prices: np.ndarray,
        base_flops: int,
        comp_flops: np.ndarray,
        prefix_blocks: list[list[int]],
    ) -> CountPlan:
        """The plan. Rows are projected to the variants the artifact has, as the general
        path projects the masks it runs; a row without a whole-mask graph (exported
        without `--fuse-top`) runs through the general path's dispatch."""
        masks = project_to_variants(table.masks, prefix_blocks)
        k = masks.shape[1]
        return cls(
            allocator=allocator,
            graphs=tuple(whole.get(row.tobytes()) for row in masks),
            masks=_frozen(masks),
            shares=_frozen(table.shares),
            flops=_frozen(base_flops + masks.astype(np.int64) @ comp_flops),
            levels=tuple(float(i) / k for i in range(k + 1)),
            budgets=tuple(float(b) for b in budgets),
            prices=tuple(float(p) for p in prices),
        )

    def price(self, budget: float) -> float:
        """`allocation.prices_for` on one budget held in float32, as `infer` holds it."""
        b = float(np.float32(budget)) + BUDGET_TOLERANCE
        return self.prices[max(bisect.bisect_right(self.budgets, b) - 1, 0)]

    def count(self, chances: np.ndarray, budget: float) -> int:
        """`allocation.counts_for` on one image: the first k maximising
        chances[k] - price * k / K, in float64 (a NaN chance wins, as in numpy's argmax)."""
        price = self.price(budget)
        row = chances.reshape(-1).tolist()
        best, best_gain = 0, -math.inf
        for k, (chance, level) in enumerate(zip(row, self.levels, strict=True)):
            gain = chance - price * level
            if math.isnan(gain):  # numpy's argmax returns the first NaN
                return k
            if gain > best_gain:
                best, best_gain = k, gain
        return best


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.array(array)
    out.flags.writeable = False
    return out
