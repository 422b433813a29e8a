"""The allocator module and the graph the runtime runs (allocator + agent at every count)."""

from __future__ import annotations

import pytest
import torch

from budget_edge.agent.allocator import (
    AllocatorGraph,
    ChancesGraph,
    build_allocator,
    decision_graph,
)
from budget_edge.agent.policy import build_agent
from budget_edge.errors import ConfigError

CALIBRATION = {"budgets": [0.0, 0.5, 1.0], "prices": [3.0, 0.5, 0.0], "source": "toy"}


def _pair(k: int = 5, extractor: str = "light") -> tuple:
    torch.manual_seed(0)
    agent = build_agent(k, extractor, 1, (1, 28, 28)).eval()
    allocator = build_allocator(k, "light", 1, (1, 28, 28), CALIBRATION).eval()
    return agent, allocator


def test_level_probabilities_are_the_agents_at_each_count() -> None:
    agent, allocator = _pair()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        chances, level_probs = AllocatorGraph(allocator, agent)(x)
        assert chances.shape == (3, 6)
        assert level_probs.shape == (3, 6, 5)
        assert ((chances > 0) & (chances < 1)).all()
        for count in range(6):
            probs, _ = agent(x, count / 5)
            torch.testing.assert_close(level_probs[:, count], probs, rtol=1e-5, atol=1e-6)


def test_flops_add_the_allocator_to_the_agents_features() -> None:
    agent, allocator = _pair(extractor="resnet8")
    graph = AllocatorGraph(allocator, agent)
    features = agent.features.flops(28, 28)
    assert allocator.flops() == allocator.features.flops(28, 28) + 2 * 64 * 6
    assert graph.flops() == allocator.flops() + features + 2 * (64 * 5 + 6 * 5)
    assert graph.flops() > agent.flops()


def test_the_graph_refuses_an_agent_of_another_model() -> None:
    agent, _ = _pair(k=5)
    with pytest.raises(ConfigError, match="two models"):
        AllocatorGraph(build_allocator(7, in_channels=1), agent)


@pytest.mark.parametrize(
    "calibration, message",
    [
        ({"budgets": [0.5], "prices": []}, "equally long"),
        ({"budgets": [0.0, 0.5], "prices": [1.0, float("nan")]}, "NaN"),
        ({"budgets": [0.5, 0.2], "prices": [1.0, 0.5]}, "rise strictly"),
        ({"budgets": [0.0, 1.5], "prices": [1.0, 0.5]}, "rise strictly"),
        ({"budgets": [0.0, 0.5], "prices": [1.0, 2.0]}, "never rise"),
        ({"budgets": [0.0, 0.5], "prices": [1.0, -1.0]}, ">= 0"),
        ({"budgets": [0.0, 0.5], "prices": [1.0, "x"]}, "non-number"),
        ("prices", "dict"),
    ],
)
def test_bad_calibrations_are_refused(calibration: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_allocator(4, calibration=calibration)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_components": 0}, "positive"),
        ({"num_components": 3, "extractor": "vgg"}, "unknown allocator extractor"),
        ({"num_components": 3, "in_channels": 0}, "in_channels"),
    ],
)
def test_bad_architectures_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_allocator(**kwargs)


NESTED = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_with_count_masks_the_decision_is_the_allocator_alone() -> None:
    torch.manual_seed(0)
    agent = build_agent(3, "light", 1, (1, 28, 28)).eval()
    allocator = build_allocator(3, "light", 1, (1, 28, 28), CALIBRATION, NESTED).eval()
    graph = decision_graph(allocator, agent)
    assert isinstance(graph, ChancesGraph)
    assert graph.flops() == allocator.flops()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), torch.sigmoid(allocator(x)))
    plain = build_allocator(3, "light", 1, (1, 28, 28), CALIBRATION)
    assert isinstance(decision_graph(plain, agent), AllocatorGraph)
    # The table survives a rebuild from the config (what a checkpoint holds).
    assert build_allocator(**allocator.config).count_masks == NESTED


@pytest.mark.parametrize(
    "table, message",
    [
        (NESTED[:3], "4 rows of 3"),
        ([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 2]], "zeros and ones"),
        ([[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]], "row 2 keeps 1"),
        ([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0.5]], "zeros and ones"),
        ("0101", "zeros and ones"),
        (5, "0/1 lists"),
        ([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, float("inf")]], "0/1 lists"),
    ],
)
def test_bad_count_masks_are_refused(table: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_allocator(3, count_masks=table)
