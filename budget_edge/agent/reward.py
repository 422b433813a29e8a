"""Eq. 4 of the paper: the reward for one action (a mask) under a budget.

Read as DESIGN.md fixes it, with d = |usage - c|:

    correct: 1 - sqrt(d) - omega * [usage > c]
    wrong:   -gamma * (1 + sqrt(d) + omega * [usage > c])

The printed formula puts omega under the square root; the text describes it as
an extra penalty for going over the budget, which is what is written here.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reward(usage: Tensor, budget: Tensor, correct: Tensor, gamma: float, omega: float) -> Tensor:
    """Eq. 4: reward per sample from usage (N,), budget c (N,) and correctness (N,) bool."""
    budget = budget.reshape(usage.shape).to(usage.dtype)
    distance = torch.sqrt((usage - budget).abs())
    over_budget = omega * (usage > budget).to(usage.dtype)
    reward_correct = 1.0 - distance - over_budget
    reward_wrong = -gamma * (1.0 + distance + over_budget)
    return torch.where(correct.reshape(usage.shape).bool(), reward_correct, reward_wrong)
