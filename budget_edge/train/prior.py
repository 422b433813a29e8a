"""A starting policy for the actor: keep components in a fixed order, by budget.

Not in the paper; a training aid, off with `prior="none"`. The actor's logit
for component k is linear in the budget c (the budget is the last input of the
`logit` layer). A policy gradient on K independent Bernoullis hardly learns
that the *count* of kept components must follow c: every component sees the
same reward for the count, so all of them learn the same threshold in c and the
thresholded policy (s >= 0.5) jumps from "nothing" to "everything". Starting
instead from staggered thresholds, order[j] (the j-th to drop) kept once
c > (K - j - 0.5) / K, the first deterministic policy already honours the budget
(it is the static drop order baseline) and the curriculum and Eq. 4 rewards
then teach it which components each image needs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from budget_edge.agent.masks import static_drop_order
from budget_edge.agent.policy import PolicyNet
from budget_edge.errors import ConfigError
from budget_edge.models.backbone import Backbone

PRIORS = ("static", "prefix", "none")


def prior_order(kind: str, backbone: Backbone, images: Tensor, labels: Tensor) -> list[int]:
    """Components from first to last dropped: ranked on held-out images, or the last first."""
    if kind == "static":
        return static_drop_order(backbone, images, labels)
    if kind == "prefix":
        return list(range(backbone.num_components - 1, -1, -1))
    raise ConfigError(f"unknown prior {kind!r}; choose one of {', '.join(PRIORS)}")


@torch.no_grad()
def apply_budget_prior(
    agent: PolicyNet, order: list[int], sharpness: float, image_scale: float = 0.1
) -> None:
    """Set logit_k = sharpness * (c - theta_k) + (image features, scaled down).

    theta_{order[j]} = (K - j - 0.5) / K: at budget c the components whose
    threshold lies below c are kept, about c * K of them. `image_scale` shrinks
    the random initial image weights so that the prior decides the first masks.
    """
    k = agent.num_components
    if sorted(order) != list(range(k)):
        raise ConfigError(f"prior order must list each of the {k} components once")
    theta = torch.empty(k)
    # The first dropped has the highest threshold: it runs only when c > (K - 0.5) / K.
    theta[torch.tensor(order)] = (k - 0.5 - torch.arange(k, dtype=torch.float32)) / k
    weight, bias = agent.logit.weight, agent.logit.bias
    weight[:, :-1] *= image_scale
    weight[:, -1] = sharpness  # the budget is the last input (appended after the features)
    bias.copy_((-sharpness * theta).to(bias))
