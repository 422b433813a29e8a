"""The actor-critic losses, each named after its equation in the paper.

The policy is a K-dimensional Bernoulli (Eq. 1). During the curriculum the
first i components are forced on: they are not the actor's choice, so they are
left out of the log-probability and the entropy (`controlled` masks them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# log(0) guard: s' is bounded away from 0 and 1 early on, but not after Eq. 11's bound ends.
_EPS = 1e-7


def log_prob(probs: Tensor, actions: Tensor, controlled: Tensor | None = None) -> Tensor:
    """Eq. 1 in log form: sum_k u_k log s_k + (1 - u_k) log(1 - s_k), per sample (N,)."""
    probs = probs.clamp(_EPS, 1.0 - _EPS)
    actions = actions.to(probs.dtype)
    per_component = actions * torch.log(probs) + (1.0 - actions) * torch.log1p(-probs)
    if controlled is not None:
        per_component = per_component * controlled.to(probs.dtype)
    return per_component.sum(dim=1)


def advantage(reward: Tensor, value: Tensor) -> Tensor:
    """Eq. 7: A = R - V(x, c). The critic is a baseline here, so no gradient flows through V."""
    return reward - value.detach()


def policy_loss(log_prob: Tensor, advantage: Tensor) -> Tensor:
    """Eq. 8: the policy-gradient loss -A log pi(u | x, c), averaged over the batch."""
    return -(advantage.detach() * log_prob).mean()


def value_loss(reward: Tensor, value: Tensor) -> Tensor:
    """Eq. 9-10: smooth-L1 of R - V (0.5 x^2 below |x| = 1, |x| - 0.5 above), batch mean."""
    return F.smooth_l1_loss(value, reward.detach(), beta=1.0)


def entropy_bonus(probs: Tensor, controlled: Tensor | None = None) -> Tensor:
    """Bernoulli entropy of the controlled components, summed per sample, batch mean.

    Optional (not in the paper; BlockDrop uses it): subtracted from the loss with
    a small weight, it keeps the actor from saturating early.
    """
    probs = probs.clamp(_EPS, 1.0 - _EPS)
    per_component = -(probs * torch.log(probs) + (1.0 - probs) * torch.log1p(-probs))
    if controlled is not None:
        per_component = per_component * controlled.to(probs.dtype)
    return per_component.sum(dim=1).mean()
