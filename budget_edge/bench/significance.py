"""How sure an accuracy is, and whether two methods differ: numpy and math only.

- `wilson_interval`: the 95% Wilson score interval of an accuracy (good at
  accuracies near 1, where the normal approximation leaves [0, 1]).
- `mcnemar_exact`: the exact McNemar test of two methods on the same images,
  from the images where exactly one of them is right (a two-sided binomial
  test with p = 1/2 on those discordant pairs). It is the paired test: two
  methods that err on the same hard images are compared by where they differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high) of the accuracy correct / total at the confidence of `z`."""
    if total <= 0:
        raise ValueError("an interval needs at least one image")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_binomial_tail(n: int, k: int) -> float:
    """log P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (n may be large)."""
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
        for i in range(k + 1)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


@dataclass(frozen=True)
class PairedTest:
    """Method a against method b on the same images."""

    only_a: int  # images a gets right and b wrong
    only_b: int
    total: int
    p_value: float

    @property
    def accuracy_delta(self) -> float:
        """a's accuracy minus b's."""
        return (self.only_a - self.only_b) / self.total


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedTest:
    """The exact two-sided McNemar test of two per-image correctness vectors."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"a paired test needs two equal, non-empty 1-D vectors, got {a.shape} and {b.shape}"
        )
    only_a = int((a & ~b).sum())
    only_b = int((b & ~a).sum())
    n = only_a + only_b
    if n == 0:
        return PairedTest(0, 0, a.size, 1.0)
    p = min(1.0, 2 * math.exp(_log_binomial_tail(n, min(only_a, only_b))))
    return PairedTest(only_a, only_b, a.size, p)
