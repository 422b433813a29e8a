"""The allocator: how many components each image needs (mode ``allocate``).

``Allocator(x) -> logits (N, K + 1)``: logit k is the chance that the backbone
classifies x correctly when it runs k components: row k of ``count_masks``.
It has its own image features (the agent's, trained by the reinforcement
reward, barely tell images apart: a head on them predicted difficulty no
better than the class prior) and costs about as much as the ``light`` agent.
``calibration`` holds the prices of `budget_edge.runtime.allocation`, one per
budget, fitted on held-out images.

Which k components run: ``count_masks``, one mask per count k = 0..K, the
agent's most common top-k mask at budget k / K on held-out training images
(`budget_edge.train.allocator`). Measured on ResNet-20 and ResNet-56, the agent
ranks its components the same for nearly every image at a given count (a
per-image ranking gave the same test accuracy within 0.2 points, see
docs/budgetnet.md), so the table keeps its choice and the runtime no longer
pays for its image features: the decision is the allocator alone.

``decision_graph`` gives what the runtime runs. With count masks it is
``ChancesGraph`` (image -> chances). Allocators from before the table (no
``count_masks``) export ``AllocatorGraph``: one call gives the allocator's
chances and the agent's probabilities at every budget k / K (the agent's image
features do not depend on the budget, so they are computed once).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from budget_edge.agent.extractors import EXTRACTORS
from budget_edge.agent.policy import PolicyNet, _resolve_input_size
from budget_edge.errors import ConfigError
from budget_edge.runtime import allocation


class Allocator(nn.Module):
    """``forward(x) -> logits (N, K + 1)``; build it with :func:`build_allocator`."""

    def __init__(
        self,
        num_components: int,
        extractor: str,
        in_channels: int,
        input_size: tuple[int, int, int],
        calibration: dict[str, Any] | None,
        count_masks: list[list[int]] | None = None,
    ) -> None:
        super().__init__()
        self.num_components = num_components
        self.input_size = input_size
        self.calibration = calibration
        self.count_masks = count_masks
        self.config: dict[str, Any] = {
            "num_components": num_components,
            "extractor": extractor,
            "in_channels": in_channels,
            "input_size": input_size,
            "calibration": calibration,
        }
        if count_masks is not None:  # absent rather than None: older readers reject the key
            self.config["count_masks"] = count_masks
        self.features = EXTRACTORS[extractor](in_channels)
        self.chance = nn.Linear(self.features.num_features, num_components + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chance(self.features(x))

    def flops(self, input_size: tuple[int, int, int] | None = None) -> int:
        """FLOPs (2 x MACs) for one image."""
        _, height, width = input_size if input_size is not None else self.input_size
        return self.features.flops(height, width) + 2 * self.chance.in_features * (
            self.num_components + 1
        )


def build_allocator(
    num_components: int,
    extractor: str = "light",
    in_channels: int = 3,
    input_size: tuple[int, int, int] | list[int] | None = None,
    calibration: dict[str, Any] | None = None,
    count_masks: Any = None,
) -> Allocator:
    """The allocator of a backbone with ``num_components`` components."""
    if (
        isinstance(num_components, bool)
        or not isinstance(num_components, int)
        or num_components < 1
    ):
        raise ConfigError(f"num_components must be a positive integer, got {num_components!r}")
    if extractor not in EXTRACTORS:
        raise ConfigError(
            f"unknown allocator extractor {extractor!r}; choose one of: {', '.join(EXTRACTORS)}"
        )
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
    if calibration is not None:
        check_calibration(calibration)
        # Plain floats: numpy scalars would save but not load under weights_only.
        calibration = {
            **calibration,
            "budgets": [float(b) for b in calibration["budgets"]],
            "prices": [float(p) for p in calibration["prices"]],
            "source": str(calibration.get("source", "")),
        }
    if count_masks is not None:
        count_masks = checked_count_masks(count_masks, num_components)
    size = _resolve_input_size(in_channels, input_size)
    return Allocator(num_components, extractor, in_channels, size, calibration, count_masks)


def checked_count_masks(count_masks: Any, num_components: int) -> list[list[int]]:
    """The table as plain int lists: K + 1 rows of K zeros and ones, row k keeping k."""
    k = num_components
    try:
        rows = [[int(v) for v in row] for row in count_masks]
        exact = all(int(v) == v for row in count_masks for v in row)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError("allocator count_masks must be a list of 0/1 lists") from None
    if (
        not exact
        or len(rows) != k + 1
        or any(len(r) != k for r in rows)
        or any(v not in (0, 1) for r in rows for v in r)
    ):
        raise ConfigError(f"allocator count_masks must be {k + 1} rows of {k} zeros and ones")
    wrong = [i for i, r in enumerate(rows) if sum(r) != i]
    if wrong:
        raise ConfigError(
            f"allocator count_masks row {wrong[0]} keeps {sum(rows[wrong[0]])} "
            f"components; row k must keep exactly k"
        )
    return rows


def check_calibration(calibration: Any) -> None:
    """budgets strictly rising in [0, 1], prices finite, >= 0 and never rising."""
    if not isinstance(calibration, dict):
        raise ConfigError(f"allocator calibration must be a dict, got {type(calibration)}")
    budgets, prices = calibration.get("budgets"), calibration.get("prices")
    if (
        not isinstance(budgets, list)
        or not isinstance(prices, list)
        or not budgets
        or len(budgets) != len(prices)
    ):
        raise ConfigError(
            "allocator calibration needs equally long, non-empty 'budgets' and 'prices' lists"
        )
    values = budgets + prices
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) or not all(
        v == v and abs(v) != float("inf") for v in values
    ):
        raise ConfigError("allocator calibration holds a non-number, NaN or inf")
    if any(b < 0 or b > 1 for b in budgets) or any(
        b2 <= b1 for b1, b2 in itertools.pairwise(budgets)
    ):
        raise ConfigError("allocator calibration budgets must rise strictly within [0, 1]")
    if any(p < 0 for p in prices) or any(p2 > p1 for p1, p2 in itertools.pairwise(prices)):
        raise ConfigError(
            "allocator calibration prices must be >= 0 and never rise with the budget"
        )


class ChancesGraph(nn.Module):
    """image -> chances (N, K + 1): the exported graph of an allocator with count masks."""

    def __init__(self, allocator: Allocator) -> None:
        super().__init__()
        self.allocator = allocator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.allocator(x))

    def flops(self, input_size: tuple[int, int, int] | None = None) -> int:
        return self.allocator.flops(input_size)


def decision_graph(allocator: Allocator, agent: PolicyNet) -> ChancesGraph | AllocatorGraph:
    """What mode 'allocate' runs per image: the allocator alone when it has count
    masks, else the allocator with the agent's features."""
    if allocator.num_components != agent.num_components:
        raise ConfigError(
            f"the allocator counts {allocator.num_components} components, "
            f"the agent {agent.num_components}: they belong to two models"
        )
    if allocator.count_masks is not None:
        return ChancesGraph(allocator)
    return AllocatorGraph(allocator, agent)


@torch.no_grad()
def allocate(
    allocator: Allocator, agent: PolicyNet, x: torch.Tensor, budgets: Sequence[float]
) -> list[np.ndarray]:
    """Mode 'allocate''s masks (N, K) uint8 of `x` at each budget, as the runtime
    chooses them (runtime/allocation.py), computed with torch."""
    calibration = allocator.calibration
    if calibration is None:
        raise ConfigError(
            "the checkpoint's allocator was never calibrated: run "
            "`budget-edge allocate` again to make a complete one"
        )
    outputs = decision_graph(allocator, agent).eval()(x)
    arrays = [o.numpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
    table = np.asarray(calibration["budgets"]), np.asarray(calibration["prices"])
    counts = (
        None if allocator.count_masks is None else allocation.CountTable.of(allocator.count_masks)
    )
    return [allocation.decide(arrays, counts, np.full(len(x), c), *table)[0] for c in budgets]


class AllocatorGraph(nn.Module):
    """image -> (chances (N, K + 1), level_probs (N, K + 1, K)): the exported graph."""

    def __init__(self, allocator: Allocator, agent: PolicyNet) -> None:
        super().__init__()
        if allocator.num_components != agent.num_components:
            raise ConfigError(
                f"the allocator counts {allocator.num_components} components, "
                f"the agent {agent.num_components}: they belong to two models"
            )
        self.allocator = allocator
        self.agent = agent
        k = agent.num_components
        self.levels: torch.Tensor
        self.register_buffer("levels", torch.arange(k + 1, dtype=torch.float32) / k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chances = torch.sigmoid(self.allocator(x))
        features = self.agent.features(x)  # (N, F), the same at every budget
        weight, bias = self.agent.logit.weight, self.agent.logit.bias
        # logit([f, c]) = W_f f + w_c c + b, for every c = k / K at once.
        image_part = features @ weight[:, :-1].T + bias  # (N, K)
        budget_part = self.levels[:, None] * weight[:, -1][None, :]  # (K + 1, K)
        level_probs = torch.sigmoid(image_part[:, None, :] + budget_part[None, :, :])
        return chances, level_probs

    def flops(self, input_size: tuple[int, int, int] | None = None) -> int:
        k = self.agent.num_components
        agent_features = self.agent.features.flops(*(input_size or self.agent.input_size)[1:])
        return (
            self.allocator.flops(input_size)
            + agent_features
            + 2 * (self.agent.num_features * k + (k + 1) * k)
        )
