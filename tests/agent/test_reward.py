"""Eq. 4 against hand-computed values (d = |usage - c|, omega outside the root)."""

import pytest
import torch

from budget_edge.agent.reward import reward


def test_reward_matches_hand_computed_values() -> None:
    usage = torch.tensor([0.75, 0.75, 0.25, 0.25, 0.5, 0.5, 0.0])
    budget = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.01])
    correct = torch.tensor([True, False, True, False, True, False, True])
    got = reward(usage, budget, correct, gamma=2.0, omega=0.1)
    expected = torch.tensor(
        [
            1 - 0.5 - 0.1,  # over by 0.25: sqrt = 0.5, plus the over-budget penalty
            -2.0 * (1 + 0.5 + 0.1),  # = -3.2
            1 - 0.5,  # under by 0.25: no over-budget penalty
            -2.0 * (1 + 0.5),  # = -3.0
            1.0,  # exactly on budget: not over
            -2.0,
            1 - 0.1,  # d = 0.01, sqrt = 0.1
        ]
    )
    torch.testing.assert_close(got, expected)


def test_reward_accepts_column_budgets() -> None:
    got = reward(torch.tensor([0.5]), torch.tensor([[0.25]]), torch.tensor([True]), 1.0, 0.0)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(0.5)
