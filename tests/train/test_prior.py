"""The starting policy: staggered budget thresholds in a given drop order."""

from __future__ import annotations

import pytest
import torch
from budgetnet_helpers import tiny_backbone

from budget_edge.agent.masks import policy_masks
from budget_edge.agent.policy import build_agent
from budget_edge.errors import ConfigError
from budget_edge.train.prior import apply_budget_prior, prior_order


def test_prior_keeps_c_times_k_components_in_drop_order() -> None:
    torch.manual_seed(0)
    agent = build_agent(4, "light", 1, (1, 28, 28)).eval()
    order = [2, 0, 3, 1]  # 2 goes first, 1 last
    apply_budget_prior(agent, order, sharpness=8.0)
    images = torch.randn(6, 1, 28, 28)
    kept = {}
    for c in (0.0, 0.25, 0.5, 0.75, 1.0):
        masks = policy_masks(agent, images, c).int()
        assert (masks == masks[0]).all()  # the prior decides, not the random image weights
        kept[c] = masks[0].tolist()
    # Thresholds: component 2 at 0.875, 0 at 0.625, 3 at 0.375, 1 at 0.125.
    assert kept == {
        0.0: [0, 0, 0, 0],
        0.25: [0, 1, 0, 0],
        0.5: [0, 1, 0, 1],
        0.75: [1, 1, 0, 1],
        1.0: [1, 1, 1, 1],
    }


def test_prefix_order_drops_the_last_component_first() -> None:
    backbone = tiny_backbone()
    assert prior_order("prefix", backbone, torch.empty(0), torch.empty(0)) == list(range(8, -1, -1))


def test_static_prior_is_a_ranking() -> None:
    backbone = tiny_backbone().eval()
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8)
    assert sorted(prior_order("static", backbone, images, labels)) == list(range(9))


def test_bad_prior() -> None:
    agent = build_agent(3, "light", 1, (1, 28, 28))
    with pytest.raises(ConfigError, match="each of the 3"):
        apply_budget_prior(agent, [0, 0, 1], 6.0)
    with pytest.raises(ConfigError, match="unknown prior"):
        prior_order("best", tiny_backbone(), torch.empty(0), torch.empty(0))
