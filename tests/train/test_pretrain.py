import json
import math
from pathlib import Path

import pytest
import torch

from budget_edge.errors import CheckpointError, ConfigError
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint
from budget_edge.train.pretrain import (
    EpochStats,
    PretrainConfig,
    RunOptions,
    capture_rng,
    drop_probabilities,
    pretrain,
    restore_rng,
    sample_mask,
)

from .toy_images import toy_arrays

QUIET = RunOptions(progress=False, threads=1)


def config(**changes) -> PretrainConfig:
    base = dict(dataset="toy", epochs=2, batch_size=16, lr=0.05, limit_train=48, limit_test=16)
    base.update(changes)
    return PretrainConfig(**base)  # type: ignore[arg-type]


def run(out: Path, cfg: PretrainConfig | None = None, **kwargs):
    return pretrain(
        cfg or config(), toy_arrays(64, 0), toy_arrays(32, 1), out, options=QUIET, **kwargs
    )


class Killed(Exception):
    """Stands in for a kill right after an epoch's checkpoint was written."""


def kill_after_epoch(n: int):
    def hook(stats: EpochStats) -> None:
        if stats.epoch == n:
            raise Killed

    return hook


def test_writes_checkpoints_meta_and_history(tmp_path: Path):
    result = run(tmp_path)
    assert len(result.history) == 2
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt", "best.pt", "history.json"}
    loaded = load_checkpoint(tmp_path / "last.pt")
    meta = loaded.meta
    assert meta["preprocessing"] == {
        "mean": [0.3],
        "std": [0.3],
        "input_size": [1, 8, 8],
        "layout": "NCHW",
    }
    assert meta["class_names"] == ["a", "b", "c", "d"]
    assert meta["dataset"] == "toy"
    assert meta["epoch"] == 2
    assert meta["test_accuracy"] == result.history[-1].test_accuracy
    assert meta["validation_split"] is None
    assert meta["best_val_score"] is None
    assert result.best_epoch == 2  # without a split the last epoch, never the test set's pick
    assert meta["train_wall_s"] > 0
    assert loaded.backbone.config["name"] == "resnet20"
    assert loaded.backbone.num_classes == 4
    for key, value in result.backbone.state_dict().items():
        torch.testing.assert_close(loaded.backbone.state_dict()[key], value, rtol=0, atol=0)
    assert loaded.train_state is not None
    assert loaded.train_state["epoch"] == 2
    history = json.loads((tmp_path / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert history["config"]["backbone"] == "resnet20"
    best = load_checkpoint(tmp_path / "best.pt")
    assert best.meta["epoch"] == result.best_epoch
    assert best.train_state is None


def test_learning_rate_follows_a_cosine_to_zero(tmp_path: Path):
    result = run(tmp_path, config(epochs=3, limit_train=64))  # 4 steps an epoch
    lrs = [h.lr for h in result.history]
    assert lrs == pytest.approx([0.05, 0.05 * (1 + 0.5) / 2, 0.05 * (1 - 0.5) / 2])


@pytest.mark.parametrize(
    "changes", [{}, {"drop_prob": 0.4}, {"sandwich": True, "val_size": 16, "limit_train": 64}]
)
def test_resume_after_a_kill_gives_identical_weights(tmp_path: Path, changes: dict):
    cfg = config(**changes)
    straight = run(tmp_path / "straight", cfg)
    with pytest.raises(Killed):
        run(tmp_path / "killed", cfg, on_epoch_end=kill_after_epoch(1))
    assert load_checkpoint(tmp_path / "killed" / "last.pt").meta["epoch"] == 1
    resumed = run(tmp_path / "killed", cfg, resume=True)
    assert [h.epoch for h in resumed.history] == [1, 2]
    for key, value in straight.backbone.state_dict().items():
        assert torch.equal(resumed.backbone.state_dict()[key], value), key
    assert resumed.history[-1].test_accuracy == straight.history[-1].test_accuracy
    assert resumed.history[-1].train_loss == straight.history[-1].train_loss


def test_resume_with_workers_is_exact_too(tmp_path: Path):
    options = RunOptions(progress=False, threads=1, workers=1)
    cfg = config(epochs=2)
    arrays = toy_arrays(64, 0), toy_arrays(32, 1)
    straight = pretrain(cfg, *arrays, tmp_path / "a", options=options)
    with pytest.raises(Killed):
        pretrain(cfg, *arrays, tmp_path / "b", options=options, on_epoch_end=kill_after_epoch(1))
    resumed = pretrain(cfg, *arrays, tmp_path / "b", options=options, resume=True)
    for key, value in straight.backbone.state_dict().items():
        assert torch.equal(resumed.backbone.state_dict()[key], value), key


def test_resume_of_a_finished_run_trains_nothing(tmp_path: Path):
    first = run(tmp_path, config(epochs=1))
    again = run(tmp_path, config(epochs=1), resume=True)
    assert again.history == first.history


def test_resume_without_checkpoint(tmp_path: Path):
    with pytest.raises(ConfigError, match="--resume: there is no checkpoint at .*last.pt"):
        run(tmp_path, resume=True)


def test_resume_with_another_backbone(tmp_path: Path):
    run(tmp_path, config(epochs=1))
    with pytest.raises(ConfigError, match="holds a resnet20 backbone, not resnet32"):
        run(tmp_path, config(epochs=1, backbone="resnet32"), resume=True)


def test_resume_with_other_settings(tmp_path: Path):
    run(tmp_path, config(epochs=1))
    with pytest.raises(ConfigError, match="lr: checkpoint 0.05, now 0.1"):
        run(tmp_path, config(epochs=1, lr=0.1), resume=True)


def test_resume_may_change_precision_and_history_says_which_epoch_ran_in_which(
    tmp_path: Path,
):
    """A run started on a CPU with bf16 goes on in fp32 on one without it (bf16 is
    emulated there, about 9x slower); each epoch records its precision."""
    with pytest.raises(Killed):
        run(tmp_path, config(precision="bf16"), on_epoch_end=kill_after_epoch(1))
    resumed = run(tmp_path, config(precision="fp32"), resume=True)
    assert [h.precision for h in resumed.history] == ["bf16", "fp32"]
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [e["precision"] for e in saved["epochs"]] == ["bf16", "fp32"]
    assert saved["config"]["precision"] == "fp32"


def test_resume_may_change_the_memory_format(tmp_path: Path):
    """Channels-last trains fp32 faster on some CPUs; switching it on mid-run is allowed
    and the resumed epochs train on from the same weights."""
    with pytest.raises(Killed):
        run(tmp_path, config(), on_epoch_end=kill_after_epoch(1))
    resumed = run(tmp_path, config(channels_last=True), resume=True)
    assert len(resumed.history) == 2
    assert math.isfinite(resumed.history[-1].train_loss)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["config"]["channels_last"] is True


def test_resume_fills_in_the_precision_of_epochs_from_before_it_was_kept(tmp_path: Path):
    with pytest.raises(Killed):
        run(tmp_path, config(precision="bf16"), on_epoch_end=kill_after_epoch(1))
    last = load_checkpoint(tmp_path / "last.pt", format="budget-edge")
    state = last.train_state
    assert state is not None
    for epoch in state["history"]:  # as a run from before precisions were recorded
        del epoch["precision"]
    save_checkpoint(tmp_path / "last.pt", last.backbone, meta=last.meta, train_state=state)
    resumed = run(tmp_path, config(precision="fp32"), resume=True)
    assert [h.precision for h in resumed.history] == ["bf16", "fp32"]


def test_resume_from_a_checkpoint_without_train_state(tmp_path: Path):
    net = build_backbone("resnet20", num_classes=4, in_channels=1, input_size=(1, 8, 8))
    save_checkpoint(tmp_path / "last.pt", net, meta={})
    with pytest.raises(CheckpointError, match="no training state"):
        run(tmp_path, resume=True)


def test_existing_run_is_not_overwritten(tmp_path: Path):
    run(tmp_path, config(epochs=1))
    with pytest.raises(ConfigError, match="already holds a run"):
        run(tmp_path, config(epochs=1))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"lr": -0.1}, "--lr must be positive"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"momentum": 1.0}, r"--momentum must be in \[0, 1\)"),
        ({"weight_decay": -1.0}, "--weight-decay must be >= 0"),
        ({"val_size": -1}, "--val-size"),
        ({"warmup_epochs": 2.0}, r"--warmup-epochs must be in \[0, --epochs\)"),
        ({"sandwich_random": -1}, "--sandwich-random"),
        ({"drop_prob": 1.0}, r"--drop-prob must be in \[0, 1\)"),
        ({"precision": "fp8"}, "--precision must be one of fp32, bf16"),
        ({"limit_train": 0}, "--limit-train must be at least 1"),
    ],
)
def test_bad_hyperparameters(tmp_path: Path, changes: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        run(tmp_path, config(**changes))
    assert not (tmp_path / "last.pt").exists()


def test_unknown_backbone(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown backbone 'resnet7'"):
        run(tmp_path, config(backbone="resnet7"))


def test_dataset_name_must_match_the_arrays(tmp_path: Path):
    with pytest.raises(ConfigError, match="config.dataset is 'cifar10' but the arrays are 'toy'"):
        run(tmp_path, config(dataset="cifar10"))


def test_bf16_and_channels_last_train(tmp_path: Path):
    result = run(tmp_path, config(epochs=1, precision="bf16", channels_last=True))
    assert result.history[0].train_loss == result.history[0].train_loss  # not NaN


def test_drop_probabilities_grow_linearly_with_depth():
    net = build_backbone("resnet20", num_classes=4, in_channels=1, input_size=(1, 8, 8))
    probs = drop_probabilities(net, 0.45)
    assert probs.tolist() == pytest.approx([0.45 * (b + 1) / 9 for b in range(9)])


def test_drop_probabilities_of_resnext_paths_follow_their_block():
    net = build_backbone("resnext29", num_classes=4, in_channels=1, input_size=(1, 8, 8))
    probs = drop_probabilities(net, 0.3)
    blocks = len(net.blocks)
    for component, p in zip(net.components, probs.tolist(), strict=True):
        assert p == pytest.approx(0.3 * (component.block + 1) / blocks)


def test_sample_mask_keeps_with_one_minus_p():
    torch.manual_seed(0)
    mask = sample_mask(torch.tensor([0.0, 0.5, 0.9]), 20000)
    assert mask.dtype == torch.bool
    assert mask.shape == (20000, 3)
    assert mask.float().mean(0).tolist() == pytest.approx([1.0, 0.5, 0.1], abs=0.02)


def test_rng_round_trip():
    import random

    import numpy as np

    state = capture_rng()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert (first[1] == second[1]).all()
    assert first[2] == second[2]


def test_the_validation_split_picks_best_pt_and_travels_in_the_meta(tmp_path: Path):
    result = run(tmp_path, config(epochs=3, val_size=16, limit_train=64))
    scores = [h.val_accuracy for h in result.history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    meta = load_checkpoint(tmp_path / "best.pt").meta
    assert meta["epoch"] == result.best_epoch
    assert meta["best_val_score"] == max(scores)
    assert meta["validation_split"]["size"] == 16
    assert len(meta["validation_split"]["indices_sha256"]) == 64
    # 64 images less 16 held out: 3 steps of 16 per epoch.
    assert load_checkpoint(tmp_path / "last.pt").train_state["scheduler"]["last_epoch"] == 9


def test_a_sandwich_run_scores_the_smallest_sub_network_too(tmp_path: Path):
    result = run(tmp_path, config(sandwich=True, val_size=16, limit_train=64))
    last = result.history[-1]
    assert 0 <= last.val_accuracy_smallest <= 1
    assert last.score == pytest.approx((last.val_accuracy + last.val_accuracy_smallest) / 2)


def test_resume_of_a_run_from_before_the_new_settings(tmp_path: Path):
    """A last.pt written before --val-size, --sandwich and warmup existed (its scheduler a
    CosineAnnealingLR, its best epoch picked by `best_accuracy`) resumes and trains on."""
    cfg = config(limit_train=64)  # 4 steps an epoch
    with pytest.raises(Killed):
        run(tmp_path, cfg, on_epoch_end=kill_after_epoch(1))
    loaded = load_checkpoint(tmp_path / "last.pt")
    state = loaded.train_state
    for name in ("val_size", "sandwich", "sandwich_random", "warmup_epochs", "zero_init_residual"):
        del state["config"][name]
    state["best_accuracy"] = state.pop("best_score")
    model = torch.nn.Linear(1, 1)
    old = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(old, T_max=2 * 4)
    for _ in range(4):
        old.step()
        cosine.step()
    state["scheduler"] = cosine.state_dict()
    save_checkpoint(tmp_path / "last.pt", loaded.backbone, meta=loaded.meta, train_state=state)
    resumed = run(tmp_path, cfg, resume=True)
    assert [h.epoch for h in resumed.history] == [1, 2]
    assert resumed.history[1].lr == pytest.approx(cfg.lr * 0.5)  # halfway down the cosine


def test_warmup_rises_linearly_then_follows_the_cosine(tmp_path: Path):
    result = run(tmp_path, config(epochs=3, limit_train=64, warmup_epochs=1.0))  # 4 steps/epoch
    lrs = [h.lr for h in result.history]  # the lr at the start of each epoch
    # warmup over epoch 1, then the cosine over the 8 steps left: halfway at epoch 3
    assert lrs == pytest.approx([0.05 / 4, 0.05, 0.05 / 2])


def test_zero_init_residual_starts_every_block_as_its_shortcut(tmp_path: Path):
    from budget_edge.train.pretrain import zero_init_residuals

    net = build_backbone("resnet20", num_classes=4, in_channels=1, input_size=(1, 8, 8))
    zero_init_residuals(net)
    assert all(float(block.bn2.weight.abs().sum()) == 0 for block in net.blocks)
    x = torch.randn(2, 16, 8, 8)
    block = net.blocks[1].eval()
    torch.testing.assert_close(block(x), torch.relu(x + block.bn2.bias.view(1, -1, 1, 1)))
