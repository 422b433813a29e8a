"""The BudgetNet training loop on a tiny backbone and generated Fashion-MNIST-format data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from budgetnet_helpers import FMNIST_META, write_backbone_checkpoint, write_tiny_fashion_mnist

from budget_edge.errors import CheckpointError, ConfigError, DataError
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint
from budget_edge.train.budgetnet import PRESETS, BudgetNetConfig, make_config, train_budgetnet


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("budgetnet")
    data = write_tiny_fashion_mnist(root / "data", n_train=64, n_test=16)
    return data, write_backbone_checkpoint(root / "backbone.pt")


# bf16 runs: one training batch, and few images for the starting policy and the check.
FEW_BF16_IMAGES = {"limit_train": 32, "prior_images": 8, "eval_images": 8}


def tiny_config(data_dir: Path, **overrides: object) -> BudgetNetConfig:
    values: dict[str, Any] = {
        "data_dir": str(data_dir),
        "batch_size": 32,
        "eval_images": 16,
        "extractor": "light",
        "curriculum_epochs": 2,
        "finetune_epochs": 1,
        "eval_budgets": (0.5, 1.0),
    }
    values.update(overrides)
    return make_config(**values)


def _states(path: Path) -> dict[str, torch.Tensor]:
    loaded = load_checkpoint(path)
    assert loaded.agent is not None
    tensors = {f"backbone.{k}": v for k, v in loaded.backbone.state_dict().items()}
    tensors.update({f"agent.{k}": v for k, v in loaded.agent.state_dict().items()})
    return tensors


def _optimizer_tensors(path: Path) -> list[torch.Tensor]:
    loaded = load_checkpoint(path)
    assert loaded.train_state is not None
    state = loaded.train_state["optimizer"]["state"]
    return [t for key in sorted(state) for t in state[key].values()]


@pytest.fixture(scope="module")
def straight(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: 2 curriculum epochs, 1 fine-tuning epoch."""
    data, backbone = setup
    return train_budgetnet(tmp_path_factory.mktemp("straight"), backbone, tiny_config(data))


@pytest.fixture(scope="module")
def split(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same run stopped after epoch 1 and resumed: (epoch-1 checkpoint, final)."""
    data, backbone = setup
    out = tmp_path_factory.mktemp("split")
    first = train_budgetnet(out, backbone, tiny_config(data), stop_after=1)
    assert first == out / "last.pt"
    kept = shutil.copy(first, out / "epoch1.pt")
    return Path(kept), train_budgetnet(out, resume=True)


def test_run_writes_agent_checkpoint_and_history(straight: Path) -> None:
    assert straight.name == "budgetnet.pt"
    loaded = load_checkpoint(straight)
    assert loaded.agent is not None
    assert loaded.agent.config["extractor"] == "light"
    assert loaded.meta["dataset"] == "fashion-mnist"  # taken from the backbone checkpoint
    assert loaded.meta["preprocessing"] == FMNIST_META["preprocessing"]
    assert loaded.train_state is not None
    assert loaded.train_state["epoch"] == 3
    history = loaded.train_state["history"]
    assert [h["stage"] for h in history] == ["curriculum", "curriculum", "finetune"]
    assert set(history[-1]["test"]) == {"0.5", "1"}
    assert all(h["seconds"] > 0 for h in history)  # wall time per epoch, for reports
    assert (straight.parent / "history.json").exists()


def test_curriculum_freezes_backbone_and_finetuning_changes_it(
    setup: tuple[Path, Path], straight: Path, split: tuple[Path, Path]
) -> None:
    before = load_checkpoint(setup[1]).backbone.state_dict()
    after_curriculum_epoch = load_checkpoint(split[0]).backbone.state_dict()
    assert all(torch.equal(before[k], after_curriculum_epoch[k]) for k in before)
    after_finetuning = load_checkpoint(straight).backbone.state_dict()
    assert any(not torch.equal(before[k], after_finetuning[k]) for k in before)


def test_the_agent_before_fine_tuning_is_kept_beside_the_final_one(
    setup: tuple[Path, Path], straight: Path
) -> None:
    """curriculum.pt: stage 1's agent on the backbone as it came, the model without
    joint fine-tuning that the fair comparison measures next to budgetnet.pt."""
    curriculum, final = _states(straight.with_name("curriculum.pt")), _states(straight)
    given = load_checkpoint(setup[1]).backbone.state_dict()
    assert all(torch.equal(given[k], curriculum[f"backbone.{k}"]) for k in given)
    assert load_checkpoint(straight.with_name("curriculum.pt")).train_state["epoch"] == 2
    backbone = [k for k in final if k.startswith("backbone.")]
    assert any(not torch.equal(curriculum[k], final[k]) for k in backbone)
    agent = [k for k in final if k.startswith("agent.")]
    assert any(not torch.equal(curriculum[k], final[k]) for k in agent)


def test_resume_gives_the_same_state_as_an_uninterrupted_run(
    straight: Path, split: tuple[Path, Path]
) -> None:
    a, b = _states(straight), _states(split[1])
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(
        torch.equal(x, y)
        for x, y in zip(_optimizer_tensors(straight), _optimizer_tensors(split[1]), strict=True)
    )


def test_bf16_autocast_trains(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """The convolutions really run in bf16 (autocast on), and the weights stay fp32."""
    data, backbone = setup
    # Few images: on a CPU without bf16 instructions every bf16 convolution is emulated.
    cfg = tiny_config(
        data, precision="bf16", curriculum_epochs=1, eval_budgets=(0.5,), **FEW_BF16_IMAGES
    )
    seen: set[torch.dtype] = set()

    def record(module: torch.nn.Module, args: object, output: object) -> None:
        if isinstance(module, torch.nn.Conv2d) and torch.is_grad_enabled():
            seen.add(output.dtype)  # type: ignore[attr-defined]

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        loaded = load_checkpoint(train_budgetnet(tmp_path / "run", backbone, cfg))
    finally:
        hook.remove()
    assert seen == {torch.bfloat16}  # every training convolution, none left in fp32
    assert loaded.agent is not None
    weights = [*loaded.agent.parameters(), *loaded.backbone.parameters()]
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights)


def test_resume_without_a_run(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_budgetnet(tmp_path / "none", resume=True)


def test_resume_of_a_foreign_checkpoint(setup: tuple[Path, Path], tmp_path: Path) -> None:
    _, backbone = setup
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(backbone.read_bytes())
    with pytest.raises(CheckpointError, match="not a BudgetNet training checkpoint"):
        train_budgetnet(tmp_path / "run", resume=True)


def test_resume_may_change_only_where_it_runs(split: tuple[Path, Path]) -> None:
    with pytest.raises(
        ConfigError, match="only device, threads, workers, precision may change, not lr"
    ):
        train_budgetnet(split[0].parent, resume=True, resume_overrides={"lr": 0.1})


def test_resume_may_change_precision_and_history_says_which(
    setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run begun in bf16 goes on in fp32 on a CPU without bf16 (emulated there, slow):
    "auto" becomes fp32 by the run's device, and history says which epoch ran in which,
    filling in epochs saved before precisions were recorded. (One test: an emulated bf16
    epoch costs seconds.)"""
    from budget_edge.runtime import machine

    monkeypatch.setattr(machine, "cpu_has_bf16", lambda: False)
    data, backbone = setup
    cfg = tiny_config(
        data, precision="bf16", curriculum_epochs=2, finetune_epochs=0, **FEW_BF16_IMAGES
    )
    last = train_budgetnet(tmp_path, backbone, cfg, stop_after=1)
    saved = torch.load(last, weights_only=False)
    del saved["train_state"]["history"][0]["precision"]  # as a run from before
    torch.save(saved, last)
    train_budgetnet(tmp_path, resume=True, resume_overrides={"precision": "auto", "device": "cpu"})
    history = json.loads((tmp_path / "history.json").read_text())
    assert [epoch["precision"] for epoch in history] == ["bf16", "fp32"]


def test_refuses_to_overwrite_a_run(setup: tuple[Path, Path], split: tuple[Path, Path]) -> None:
    data, backbone = setup
    with pytest.raises(ConfigError, match="--resume"):
        train_budgetnet(split[0].parent, backbone, tiny_config(data))


def test_missing_checkpoint(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = setup
    with pytest.raises(CheckpointError, match="not found"):
        train_budgetnet(tmp_path / "run", tmp_path / "nope.pt", tiny_config(data))


def test_dataset_that_does_not_fit_the_backbone(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = setup
    cifar_net = build_backbone("resnet20", num_classes=10)  # 3x32x32 images
    path = save_checkpoint(tmp_path / "cifar.pt", cifar_net, meta={"dataset": "cifar10"})
    with pytest.raises(DataError, match="built for"):
        train_budgetnet(tmp_path / "run", path, tiny_config(data, data="fashion-mnist"))


def test_presets_and_overrides() -> None:
    assert make_config("paper").curriculum_epochs == PRESETS["paper"]["curriculum_epochs"]
    demo = make_config("demo", batch_size=64, gamma=None)
    assert demo.limit_train == PRESETS["demo"]["limit_train"]
    assert demo.batch_size == 64
    assert demo.gamma == 1.0  # None means "not given": the default stays
    # Eq. 11 exploration ends with the run: 8 curriculum + 5 fine-tuning epochs.
    assert make_config(curriculum_epochs=8).exploration_decay == pytest.approx(1 / 13)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"preset": "huge"}, "unknown preset"),
        ({"colour": 1}, "unknown training option"),
        ({"alpha": 0.3}, "alpha"),
        ({"usage": "blocks"}, "usage"),
        ({"curriculum_epochs": 0, "finetune_epochs": 0}, "at least one stage"),
        ({"lr": 0.0}, "lr must be > 0"),
    ],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(**kwargs)


def test_auto_extractor_keeps_the_agent_small() -> None:
    from budget_edge.models import build_backbone
    from budget_edge.train.budgetnet import BudgetNetConfig, auto_extractor

    assert BudgetNetConfig().extractor == "auto"
    # resnet8 is 30% of ResNet-20 on Fashion-MNIST, 4.8% of ResNet-110 on CIFAR.
    small = build_backbone("resnet20", in_channels=1, input_size=(1, 28, 28))
    assert auto_extractor(small) == "light"
    assert auto_extractor(build_backbone("resnet110")) == "resnet8"


def test_with_a_validation_split_the_agent_trains_on_the_rest_and_checks_on_it(
    setup: tuple[Path, Path],
) -> None:
    from budget_edge.data.registry import load_arrays
    from budget_edge.data.split import split_validation
    from budget_edge.train.budgetnet import load_run_data

    data, backbone_path = setup
    train = load_arrays("fashion-mnist", data, "train")
    rest, val, split = split_validation(train, 16)
    meta = {**FMNIST_META, "validation_split": split.as_meta()}
    backbone = load_checkpoint(backbone_path).backbone
    cfg = tiny_config(data, prior_images=8, data="fashion-mnist")
    run = load_run_data(cfg, backbone, meta)
    assert len(run.train) == 48
    assert torch.equal(run.train.images, torch.from_numpy(rest.images).permute(0, 3, 1, 2))
    assert run.checked_on == "validation"
    assert torch.equal(run.eval_labels, torch.from_numpy(val.labels))
    assert torch.equal(run.held_out_labels, torch.from_numpy(val.labels[-8:]))
    # A split made on other data is refused, not silently replaced by the tail.
    other = {**meta, "validation_split": {**split.as_meta(), "indices_sha256": "0" * 64}}
    with pytest.raises(DataError, match="trained on another training set"):
        load_run_data(cfg, backbone, other)
