"""Budget usage of a mask: the share of the backbone that runs.

The paper measures usage as the fraction of components kept, |u|_0 / K. As an
option it is measured in FLOPs: the FLOPs of the kept components over the FLOPs
of all components, because blocks differ in cost (ResNeXt paths, torchvision
stages). Both give 0 for an empty mask and 1 for a full one, so a budget c in
[0, 1] means the same thing either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from budget_edge.errors import ConfigError

USAGE_KINDS = ("components", "flops")


def usage_weights(kind: str, component_flops: Sequence[float]) -> Tensor:
    """Weight of each component in the usage: 1 each ("components") or its FLOPs ("flops")."""
    if kind == "components":
        return torch.ones(len(component_flops))
    if kind == "flops":
        weights = torch.tensor([float(f) for f in component_flops])
        if (weights <= 0).any():
            raise ConfigError(
                "usage 'flops' needs every component to have positive FLOPs; "
                "use --usage components for this backbone"
            )
        return weights
    raise ConfigError(f"unknown usage kind {kind!r}; choose one of {', '.join(USAGE_KINDS)}")


def usage(mask: Tensor, weights: Tensor) -> Tensor:
    """Usage per sample: sum_k w_k u_k / sum_k w_k for a (N, K) mask; returns (N,)."""
    weights = weights.to(device=mask.device, dtype=torch.float32)
    return (mask.float() * weights).sum(dim=1) / weights.sum()
