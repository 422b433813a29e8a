"""Training the allocator: the correctness table, the fit, the calibration, the checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from budget_edge.agent.masks import correct_under_masks, policy_masks
from budget_edge.agent.policy import build_agent
from budget_edge.data.torch_dataset import as_tensors
from budget_edge.errors import CheckpointError, ConfigError
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import LoadedCheckpoint, load_checkpoint
from budget_edge.runtime import allocation
from budget_edge.train import allocator as allocator_training
from budget_edge.train.allocator import (
    AllocatorConfig,
    count_masks_of,
    level_correctness,
    train_allocator,
)

from .toy_images import toy_arrays

QUICK = AllocatorConfig(epochs=2, batch_size=32, calib_images=40)


@pytest.fixture(scope="module")
def model() -> LoadedCheckpoint:
    torch.manual_seed(0)
    net = build_backbone("resnet8", num_classes=4, in_channels=1, input_size=(1, 8, 8)).eval()
    agent = build_agent(net.num_components, "light", 1, (1, 8, 8)).eval()
    return LoadedCheckpoint(net, agent, {"dataset": "toy"}, "budget-edge")


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return as_tensors(toy_arrays(160, seed=1), [0.3], [0.3])


def test_the_count_masks_are_the_agents_most_common_top_k(model, data) -> None:
    images, _ = data
    table = count_masks_of(model.agent, images, batch_size=64)
    k = model.agent.num_components
    assert table.shape == (k + 1, k)
    assert table.dtype == np.uint8
    assert table.sum(axis=1).tolist() == list(range(k + 1))
    for count in range(k + 1):
        masks = policy_masks(model.agent, images, count / k, 64, mode="rank").numpy()
        rows, times = np.unique(masks.astype(np.uint8), axis=0, return_counts=True)
        assert times[(rows == table[count]).all(axis=1)][0] == times.max()


def test_count_masks_keep_a_prefix_where_the_runtime_runs_one() -> None:
    torch.manual_seed(3)
    agent = build_agent(6, "light", 1, (1, 8, 8)).eval()
    images = torch.randn(64, 1, 8, 8)
    raw = count_masks_of(agent, images)
    table = count_masks_of(agent, images, prefix_blocks=[[0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(table.sum(axis=1), raw.sum(axis=1))
    for row in table[:, :5]:  # a prefix: every kept path before every dropped one
        assert row.tolist() == sorted(row.tolist(), reverse=True)
    np.testing.assert_array_equal(table[:, 5], raw[:, 5])  # the other block as it was
    assert (raw[:, :5] != table[:, :5]).any()  # the agent's own choice was not a prefix


def test_the_table_holds_each_counts_correctness(model, data) -> None:
    images, labels = data
    count_masks = count_masks_of(model.agent, images)
    table = level_correctness(model.backbone, count_masks, images, labels, batch_size=64)
    k = model.backbone.num_components
    assert table.shape == (len(images), k + 1)
    assert table.dtype == bool
    full = correct_under_masks(model.backbone, images, labels, None).numpy()
    np.testing.assert_array_equal(table[:, k], full)
    half = torch.from_numpy(count_masks[k // 2]).bool().expand(len(images), k)
    np.testing.assert_array_equal(
        table[:, k // 2], correct_under_masks(model.backbone, images, labels, half).numpy()
    )


def test_training_writes_a_calibrated_allocator_and_keeps_the_model(model, data, tmp_path) -> None:
    images, labels = data
    out = tmp_path / "allocated.pt"
    train_allocator(model, images, labels, out, QUICK, source="toy train")
    loaded = load_checkpoint(out)
    assert loaded.allocator is not None
    assert loaded.agent is not None
    calibration = loaded.allocator.calibration
    assert calibration["source"] == "toy train: last 40 images"
    assert (np.diff(calibration["prices"]) <= 0).all()
    for name in ("backbone", "agent"):  # the allocator changes neither
        before, after = getattr(model, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(before[key], after[key]) for key in before)
    info = loaded.meta["allocator"]
    assert info["fit_images"] == 120
    assert info["calib_images"] == 40
    assert len(info["losses"]) == 2
    curve = info["held_out_accuracy"]  # every 0.05, the accuracy the saturation came from
    assert len(curve) == 21
    assert all(0.0 <= a <= 1.0 for a in curve.values())
    # The calibration holds on the images it was made on: mean usage at most c.
    tail = images[-40:]
    with torch.no_grad():
        chances = torch.sigmoid(loaded.allocator(tail)).double().numpy()
    for c, price in zip(calibration["budgets"], calibration["prices"], strict=True):
        assert allocation.usage(chances, price) <= c + 1e-9


def test_a_rerun_reuses_the_saved_table(model, data, tmp_path, monkeypatch) -> None:
    images, labels = data
    out = tmp_path / "allocated.pt"
    train_allocator(model, images, labels, out, QUICK, source="toy")
    assert (tmp_path / "allocated.pt.levels.npz").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("the table was computed again")

    monkeypatch.setattr(allocator_training, "level_correctness", fail)
    train_allocator(model, images, labels, out, QUICK, source="toy")
    # Other images make another table; so does one other image or label anywhere.
    with pytest.raises(AssertionError, match="computed again"):
        train_allocator(model, images[:100], labels[:100], out, QUICK, source="toy")
    edited = images.clone()
    edited[-1, 0, 0, 0] += 1.0
    with pytest.raises(AssertionError, match="computed again"):
        train_allocator(model, edited, labels, out, QUICK, source="toy")
    relabelled = labels.clone()
    relabelled[-1] = (relabelled[-1] + 1) % 10
    with pytest.raises(AssertionError, match="computed again"):
        train_allocator(model, images, relabelled, out, QUICK, source="toy")


def test_a_table_stopped_part_way_goes_on_from_the_next_count(model, data, tmp_path) -> None:
    """The table is most of `allocate`'s time (55 minutes for ResNet-56 on one core): a
    run killed during it keeps every count it finished."""
    images, labels = data
    (tmp_path / "whole").mkdir()
    train_allocator(model, images, labels, tmp_path / "whole" / "allocated.pt", QUICK, "toy")
    with np.load(tmp_path / "whole" / "allocated.pt.levels.npz") as saved:
        whole = saved["table"]

    class Killed(Exception):
        pass

    def kill_after_count_2(line: str) -> None:
        if line.startswith("2 of "):
            raise Killed

    out = tmp_path / "allocated.pt"
    with pytest.raises(Killed):
        train_allocator(model, images, labels, out, QUICK, "toy", progress=kill_after_count_2)
    lines: list[str] = []
    train_allocator(model, images, labels, out, QUICK, "toy", progress=lines.append)
    counts = [line for line in lines if " components: " in line]
    assert counts[0].startswith("3 of ")  # counts 0-2 came from the file
    assert any("counts 0-2 done by an earlier run; going on at 3" in line for line in lines)
    with np.load(tmp_path / "allocated.pt.levels.npz") as saved:
        np.testing.assert_array_equal(saved["table"], whole)  # as if never stopped
        assert int(saved["done"]) == whole.shape[1]


@pytest.mark.parametrize("damage", ["text", "empty", "truncated"])
def test_a_damaged_table_is_computed_again(model, data, tmp_path, damage) -> None:
    images, labels = data
    out = tmp_path / "allocated.pt"
    levels = tmp_path / "allocated.pt.levels.npz"
    if damage == "truncated":  # a real table cut short: a bad zip, not a missing key
        train_allocator(model, images, labels, out, QUICK, source="toy")
        levels.write_bytes(levels.read_bytes()[:200])
    else:
        levels.write_bytes(b"not a table" if damage == "text" else b"")
    train_allocator(model, images, labels, out, QUICK, source="toy")
    assert load_checkpoint(out).allocator is not None


def test_the_fit_learns_which_images_are_easy(data) -> None:
    """Chances follow a rule the images show (bright top-left quadrant: right with
    one component; otherwise only with all): the fit must find it."""
    images, labels = data
    k = 3
    easy = (labels == 0).numpy()
    table = np.zeros((len(images), k + 1), bool)
    table[:, k] = True
    table[easy, 1:] = True
    allocator = allocator_training.build_allocator(k, "light", 1, (1, 8, 8))
    cfg = AllocatorConfig(epochs=30, batch_size=32, lr=1e-2)
    losses = allocator_training.fit_allocator(allocator, images, table, cfg)
    assert losses[-1] < losses[0] * 0.5
    chances = allocator_training.chances(allocator, images)
    assert chances[easy, 1].mean() > 0.8
    assert chances[~easy, 1].mean() < 0.2


def test_a_checkpoint_without_an_agent_is_refused(model, data, tmp_path) -> None:
    images, labels = data
    bare = LoadedCheckpoint(model.backbone, None, {}, "budget-edge")
    with pytest.raises(CheckpointError, match="no agent"):
        train_allocator(bare, images, labels, tmp_path / "a.pt", QUICK, source="toy")


@pytest.mark.parametrize(
    "cfg, message",
    [
        (AllocatorConfig(calib_images=160), "leaves none"),
        (AllocatorConfig(epochs=0), ">= 1"),
        (AllocatorConfig(lr=0.0), "positive"),
    ],
)
def test_bad_settings_are_refused(model, data, tmp_path, cfg, message) -> None:
    images, labels = data
    with pytest.raises(ConfigError, match=message):
        train_allocator(model, images, labels, tmp_path / "a.pt", cfg, source="toy")
    assert not (tmp_path / "a.pt").exists()


def test_a_file_with_an_allocator_but_no_agent_is_refused(model, data, tmp_path) -> None:
    images, labels = data
    out = tmp_path / "allocated.pt"
    train_allocator(model, images, labels, out, QUICK, source="toy")
    payload = torch.load(out, weights_only=True)
    payload["agent"] = None
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="no agent"):
        load_checkpoint(tmp_path / "edited.pt")


def test_damaged_allocator_weights_are_refused(model, data, tmp_path: Path) -> None:
    images, labels = data
    out = tmp_path / "allocated.pt"
    train_allocator(model, images, labels, out, QUICK, source="toy")
    payload = torch.load(out, weights_only=True)
    payload["allocator"]["state_dict"]["chance.bias"][0] += 1.0
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="allocator weights do not match"):
        load_checkpoint(tmp_path / "edited.pt")


def _plateau(n: int = 400, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Image i is right from need[i] components on; the chances keep creeping up after
    that, so without a floor a low price runs every component for nothing."""
    rng = np.random.default_rng(0)
    need = rng.integers(1, k + 1, n)
    correct = np.arange(k + 1)[None, :] >= need[:, None]
    sure = rng.uniform(0.5, 0.9, (n, 1))  # how sure the allocator is of each image
    chances = correct * (sure + 0.02 * np.arange(k + 1)[None, :])
    return chances, correct


def test_the_saturation_budget_is_where_accuracy_stops_rising() -> None:
    chances, correct = _plateau()
    k = chances.shape[1] - 1
    enough = correct.argmax(axis=1).mean() / k  # the mean usage where every image is right
    assert allocator_training.saturation_budget(chances, correct, 0.0) == pytest.approx(
        enough, abs=0.011
    )
    # A slack lets a lower budget count as saturated.
    assert allocator_training.saturation_budget(chances, correct, 0.05) < enough


def test_no_budget_spends_beyond_the_saturation_budget() -> None:
    chances, correct = _plateau()
    prices, saturation = allocator_training.saturated_prices(chances, correct, 0.0)
    top = allocation.usage(chances, prices[-1])  # budget 1.0
    assert top <= saturation + 1e-9
    assert top < 0.9
    free, one = allocator_training.saturated_prices(chances, correct, None)
    assert one == 1.0
    assert allocation.usage(chances, free[-1]) == pytest.approx(1.0)
    assert all(p >= q for p, q in zip(prices, free, strict=True))


def test_a_slack_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="accuracy-slack"):
        AllocatorConfig(accuracy_slack=1.5).check()


def test_a_budget_past_the_peak_does_not_spend_more() -> None:
    # Accuracy peaks at one component and falls after it (the allocator's chances
    # keep rising where the backbone gets worse): the peak is the saturation budget.
    k, n = 4, 200
    correct = np.zeros((n, k + 1), bool)
    correct[:, 1] = True
    correct[: n // 2, 2:] = True
    chances = np.tile(0.2 + 0.3 * np.sqrt(np.arange(k + 1)), (n, 1))  # each count adds less
    assert allocator_training.saturation_budget(chances, correct, 0.0) == pytest.approx(
        1 / k, abs=0.011
    )
