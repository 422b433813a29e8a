"""benchmarks/investigations/count_table_choice.py: table and ranking on the same counts."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from budgetnet_helpers import FMNIST_META, tiny_backbone

from budget_edge.agent.allocator import build_allocator
from budget_edge.agent.policy import build_agent
from budget_edge.errors import ConfigError
from budget_edge.models.checkpoint import LoadedCheckpoint
from budget_edge.train.allocator import count_masks_of

INVESTIGATIONS = Path(__file__).resolve().parents[2] / "benchmarks" / "investigations"
sys.path.insert(0, str(INVESTIGATIONS))

import count_table_choice  # noqa: E402

CALIBRATION = {"budgets": [0.0, 0.25, 0.5, 1.0], "prices": [9.0, 0.05, 0.0, 0.0], "source": "test"}


@pytest.fixture(scope="module")
def loaded() -> LoadedCheckpoint:
    net = tiny_backbone(1).eval()
    agent = build_agent(net.num_components, "light", 1, (1, 28, 28)).eval()
    table = count_masks_of(agent, torch.randn(32, 1, 28, 28)).tolist()
    allocator = build_allocator(
        net.num_components, "light", 1, (1, 28, 28), calibration=CALIBRATION, count_masks=table
    ).eval()
    with torch.no_grad():  # spread the chances, so the counts differ between images
        allocator.chance.weight.mul_(20.0)
    return LoadedCheckpoint(net, agent, dict(FMNIST_META), "budget-edge", allocator=allocator)


def test_both_decisions_run_the_allocators_counts(loaded: LoadedCheckpoint) -> None:
    images = torch.randn(40, 1, 28, 28)
    table, rank = count_table_choice.both_masks(loaded, images, 0.5)
    assert table.shape == rank.shape == (40, loaded.backbone.num_components)
    np.testing.assert_array_equal(table.sum(1), rank.sum(1))  # the same counts
    assert len(set(table.sum(1).tolist())) > 1  # which differ between images
    rows = {tuple(r) for r in np.asarray(loaded.allocator.count_masks, np.uint8)}
    assert {tuple(m) for m in table} <= rows  # the table's rows, nothing else


def test_the_comparison_is_paired_on_the_same_images(loaded, monkeypatch) -> None:
    monkeypatch.setattr(count_table_choice, "BUDGETS", (0.25, 1.0))
    images, labels = torch.randn(24, 1, 28, 28), torch.randint(0, 10, (24,))
    rows = count_table_choice.compare(loaded, images, labels)
    assert [r["budget"] for r in rows] == [0.25, 1.0]
    for r in rows:
        delta = r["table_accuracy"] - r["ranking_accuracy"]
        assert r["table_minus_ranking"] == pytest.approx(delta)
        assert 0 < r["p_value"] <= 1
    text = count_table_choice.markdown(rows, "ckpt.pt", 24, {"cpu": "Test CPU"})
    assert "| 1 | " in text
    assert "Test CPU" in text


def test_a_checkpoint_without_a_table_allocator_is_refused() -> None:
    net = tiny_backbone(1)
    bare = LoadedCheckpoint(net, None, dict(FMNIST_META), "budget-edge")
    with pytest.raises(ConfigError, match="agent and a table allocator"):
        count_table_choice.both_masks(bare, torch.randn(2, 1, 28, 28), 0.5)
