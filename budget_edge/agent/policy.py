"""The BudgetNet agent: image + budget -> keep-probability per component, and a value.

Mirrors the paper's reference ``Policy32BudgetConstraint``: image features from
an extractor, the budget appended after them, then two linear heads, ``logit``
(K keep-probabilities through a sigmoid) and ``vnet`` (the critic's value
V(x, c), Eq. 7). Parameter names match the reference so its agent state dicts
load unchanged: ``features.*``, ``logit.{weight,bias}``, ``vnet.{weight,bias}``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from budget_edge.agent.extractors import EXTRACTORS
from budget_edge.errors import ConfigError, InputError

DEFAULT_SPATIAL = (32, 32)


class PolicyNet(nn.Module):
    """``forward(x, budget) -> (probs (N, K), value (N,))``.

    Build it with :func:`build_agent`; ``config`` holds the arguments, so
    ``build_agent(**agent.config)`` rebuilds the same architecture.
    """

    def __init__(
        self,
        num_components: int,
        extractor: str,
        in_channels: int,
        input_size: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.num_components = num_components
        self.extractor = extractor
        self.in_channels = in_channels
        self.input_size = input_size
        self.config: dict[str, Any] = {
            "num_components": num_components,
            "extractor": extractor,
            "in_channels": in_channels,
            "input_size": input_size,
        }
        self.features = EXTRACTORS[extractor](in_channels)
        self.num_features = self.features.num_features
        # +1: the budget is one more input feature, appended after the image features.
        self.logit = nn.Linear(self.num_features + 1, num_components)
        self.vnet = nn.Linear(self.num_features + 1, 1)

    def forward(
        self, x: torch.Tensor, budget: torch.Tensor | float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_images(x)
        budget_column = self._budget_column(budget, x)
        state = torch.cat([self.features(x), budget_column], dim=1)
        probs = torch.sigmoid(self.logit(state))
        value = self.vnet(state).squeeze(1)
        return probs, value

    def _check_images(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(
                f"agent input must be a 4-D image batch (N, C, H, W), got {shape}; "
                "add a batch dimension with x.unsqueeze(0) for a single image"
            )
        if x.shape[1] != self.in_channels:
            raise InputError(
                f"agent expects {self.in_channels} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); images must be NCHW with the channels "
                "the agent was built for"
            )

    def _budget_column(self, budget: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """The budget as an (N, 1) column in x's dtype and device."""
        n = x.shape[0]
        if isinstance(budget, bool) or not isinstance(budget, (int, float, torch.Tensor)):
            raise InputError(
                f"budget must be a float or a tensor of shape (N,) or (N, 1), "
                f"got {type(budget).__name__}"
            )
        if not isinstance(budget, torch.Tensor):
            return x.new_full((n, 1), float(budget))
        if budget.dim() == 0:
            return budget.to(x).expand(n).reshape(n, 1)
        if budget.shape in ((n,), (n, 1)):
            return budget.to(x).reshape(n, 1)
        raise InputError(
            f"budget shape {tuple(budget.shape)} does not fit a batch of {n} images; "
            f"give one budget per image, shape ({n},) or ({n}, 1), or a single float"
        )

    def flops(self, input_size: tuple[int, int, int] | None = None) -> int:
        """FLOPs (2 x MACs) of one forward pass for one image of ``input_size``."""
        _, height, width = input_size if input_size is not None else self.input_size
        heads = 2 * (self.num_features + 1) * (self.num_components + 1)
        return self.features.flops(height, width) + heads


def build_agent(
    num_components: int,
    extractor: str = "resnet8",
    in_channels: int = 3,
    input_size: tuple[int, int, int] | list[int] | None = None,
) -> PolicyNet:
    """Build the agent for a backbone with ``num_components`` components.

    ``input_size`` (C, H, W) defaults to ``(in_channels, 32, 32)``; it is the
    size ``flops()`` assumes, the extractors themselves pool globally.
    """
    if isinstance(num_components, bool) or not isinstance(num_components, int):
        raise ConfigError(f"num_components must be an integer, got {num_components!r}")
    if num_components < 1:
        raise ConfigError(f"num_components must be at least 1, got {num_components}")
    if extractor not in EXTRACTORS:
        known = ", ".join(EXTRACTORS)
        raise ConfigError(f"unknown agent extractor {extractor!r}; choose one of: {known}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
    size = _resolve_input_size(in_channels, input_size)
    return PolicyNet(num_components, extractor, in_channels, size)


def _resolve_input_size(
    in_channels: int, input_size: tuple[int, int, int] | list[int] | None
) -> tuple[int, int, int]:
    if input_size is None:
        return (in_channels, *DEFAULT_SPATIAL)
    size = tuple(input_size)
    if len(size) != 3 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ConfigError(
            f"input_size must be three positive integers (C, H, W), got {input_size!r}"
        )
    if size[0] != in_channels:
        raise ConfigError(
            f"input_size {size} has {size[0]} channels but in_channels is {in_channels}; "
            "make them agree"
        )
    return (size[0], size[1], size[2])
