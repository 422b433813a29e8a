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


def test_the_ranking_follows_the_agent_where_the_table_does_not(loaded) -> None:
    """A table whose rows are not the agent's choices (the last blocks first): the ranking
    must still run the agent's own top components, so the two decisions differ."""
    k = loaded.backbone.num_components
    last_first = [[int(i >= k - count) for i in range(k)] for count in range(k + 1)]
    images = torch.randn(40, 1, 28, 28)
    _, own_rank = count_table_choice.both_masks(loaded, images, 0.5)
    table_before = loaded.allocator.count_masks
    try:
        loaded.allocator.count_masks = last_first
        table, rank = count_table_choice.both_masks(loaded, images, 0.5)
    finally:
        loaded.allocator.count_masks = table_before
    np.testing.assert_array_equal(rank, own_rank)  # the agent's ranking, whatever the table
    assert {tuple(m) for m in table} <= {tuple(r) for r in last_first}
    assert (table != rank).any()


def test_the_comparison_is_paired_on_the_same_images(loaded, monkeypatch) -> None:
    """Discordant images counted per image: a comparison of the two accuracies alone
    (unpaired) could not tell 0 / 0 (the same to the image) from 3 / 3."""
    monkeypatch.setattr(count_table_choice, "BUDGETS", (0.25, 1.0))
    images, labels = torch.randn(24, 1, 28, 28), torch.randint(0, 10, (24,))
    rows = count_table_choice.compare(loaded, images, labels)
    assert [r["budget"] for r in rows] == [0.25, 1.0]
    for r, c in zip(rows, (0.25, 1.0), strict=True):
        table, rank = count_table_choice.both_masks(loaded, images, c)
        right = [
            count_table_choice.correct_under_masks(
                loaded.backbone, images, labels, torch.from_numpy(m).bool()
            ).numpy()
            for m in (table, rank)
        ]
        assert r["only_table"] == int((right[0] & ~right[1]).sum())
        assert r["only_ranking"] == int((right[1] & ~right[0]).sum())
        assert r["table_minus_ranking"] == pytest.approx((r["only_table"] - r["only_ranking"]) / 24)
    text = count_table_choice.markdown(rows, "ckpt.pt", 24, {"cpu": "Test CPU"})
    assert "in-sample for the table" in text
    assert f"| {rows[1]['only_table']} / {rows[1]['only_ranking']} |" in text


def test_only_validation_images_are_compared(tmp_path, loaded) -> None:
    from budgetnet_helpers import write_tiny_fashion_mnist

    from budget_edge.data.registry import load_arrays
    from budget_edge.data.split import split_validation

    data = write_tiny_fashion_mnist(tmp_path, n_train=60, n_test=4)
    _, val, split = split_validation(load_arrays("fashion-mnist", data, "train"), 12)
    meta = {**loaded.meta, "validation_split": split.as_meta()}
    with_split = LoadedCheckpoint(loaded.backbone, loaded.agent, meta, "budget-edge")
    images, labels = count_table_choice.validation_tensors(with_split, "ckpt.pt", data)
    assert len(images) == 12
    np.testing.assert_array_equal(labels.numpy(), val.labels)
    without = LoadedCheckpoint(loaded.backbone, loaded.agent, loaded.meta, "budget-edge")
    with pytest.raises(ConfigError, match="no validation split"):
        count_table_choice.validation_tensors(without, "ckpt.pt", data)


def test_a_checkpoint_without_a_table_allocator_is_refused() -> None:
    net = tiny_backbone(1)
    bare = LoadedCheckpoint(net, None, dict(FMNIST_META), "budget-edge")
    with pytest.raises(ConfigError, match="agent and a table allocator"):
        count_table_choice.both_masks(bare, torch.randn(2, 1, 28, 28), 0.5)
