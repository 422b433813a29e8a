"""Eq. 11 of the paper: bound the actor's probabilities to keep it exploring.

    s' = a * s + (1 - a) * (1 - s),   a = alpha ** max(1 - beta * t, 0)

so s' lies in [1 - a, a]. At t = 0 the bound is alpha (0.8: s' in [0.2, 0.8]);
it loosens as the epoch t grows and is gone (s' = s) once t >= 1 / beta. The
exponent is clamped at 0 there, otherwise alpha ** (negative) > 1 would push
s' outside [0, 1].
"""

from __future__ import annotations

from torch import Tensor


def exploration_bound(alpha: float, beta: float, epoch: float) -> float:
    """a = alpha ** max(1 - beta * t, 0): the upper bound on s' at epoch t."""
    exponent = max(1.0 - beta * epoch, 0.0)
    return float(alpha**exponent)


def explore(probs: Tensor, alpha: float, beta: float, epoch: float) -> Tensor:
    """Eq. 11: the exploring distribution s' from the actor's probabilities s."""
    bound = exploration_bound(alpha, beta, epoch)
    return bound * probs + (1.0 - bound) * (1.0 - probs)
