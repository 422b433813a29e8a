"""Eq. 11 against hand-computed values, including the clamp once t >= 1/beta."""

import math

import pytest
import torch

from budget_edge.agent.explore import exploration_bound, explore


def test_bound_at_start_is_alpha() -> None:
    s = torch.tensor([1.0, 0.0, 0.5, 0.9])
    got = explore(s, alpha=0.8, beta=0.1, epoch=0)
    # 0.8 * s + 0.2 * (1 - s)
    torch.testing.assert_close(got, torch.tensor([0.8, 0.2, 0.5, 0.74]))


def test_bound_loosens_halfway() -> None:
    # t = 5, beta = 0.1: exponent 0.5, a = sqrt(0.8) = 0.894427191
    assert exploration_bound(0.8, 0.1, 5) == pytest.approx(math.sqrt(0.8))
    got = explore(torch.tensor([1.0, 0.0]), alpha=0.8, beta=0.1, epoch=5)
    torch.testing.assert_close(got, torch.tensor([0.894427191, 0.105572809]))


@pytest.mark.parametrize("epoch", [10, 20, 1000])
def test_identity_once_exponent_reaches_zero(epoch: int) -> None:
    # Unclamped, t = 20 would give a = 0.8 ** -1 = 1.25 and s' = -0.25 for s = 0.
    s = torch.tensor([0.0, 0.3, 1.0])
    torch.testing.assert_close(explore(s, alpha=0.8, beta=0.1, epoch=epoch), s)
