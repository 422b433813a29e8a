"""Usage as a fraction of components (the paper) or of FLOPs (the option)."""

import pytest
import torch

from budget_edge.agent.usage import usage, usage_weights
from budget_edge.errors import ConfigError


def test_component_usage() -> None:
    mask = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    got = usage(mask, usage_weights("components", [1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(got, torch.tensor([0.75, 0.0, 1.0]))


def test_flops_usage() -> None:
    mask = torch.tensor([[1, 0, 1, 1]])
    got = usage(mask, usage_weights("flops", [1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(got, torch.tensor([0.8]))  # (1 + 3 + 4) / 10


def test_unknown_usage_kind() -> None:
    with pytest.raises(ConfigError, match="components, flops"):
        usage_weights("blocks", [1.0])


def test_flops_usage_needs_positive_flops() -> None:
    with pytest.raises(ConfigError, match="--usage components"):
        usage_weights("flops", [1.0, 0.0])
