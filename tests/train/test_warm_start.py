"""`pretrain --init`: a run starts from another checkpoint's weights, never from weights
that trained on its validation images."""

from pathlib import Path

import pytest
import torch

from budget_edge.errors import CheckpointError, ConfigError
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint
from budget_edge.train.pretrain import PretrainConfig, RunOptions, pretrain
from budget_edge.train.warm_start import init_digest

from .toy_images import toy_arrays

QUIET = RunOptions(progress=False, threads=1)


def config(**changes) -> PretrainConfig:
    base = dict(dataset="toy", epochs=1, batch_size=16, lr=0.05, limit_train=32, limit_test=16)
    base.update(changes)
    return PretrainConfig(**base)  # type: ignore[arg-type]


def run(out: Path, cfg: PretrainConfig, init: Path | None = None, **kwargs):
    if init is not None:
        cfg = PretrainConfig(**{**cfg.__dict__, "init_sha256": init_digest(init)})
    return pretrain(
        cfg, toy_arrays(64, 0), toy_arrays(32, 1), out, options=QUIET, init=init, **kwargs
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-8 trained with a validation split of 16 images."""
    out = tmp_path_factory.mktemp("first")
    run(out, config(backbone="resnet8", val_size=16))
    return out / "best.pt"


def conv_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith("conv1.weight")}


def test_the_run_starts_from_the_checkpoints_weights(trained: Path, tmp_path: Path):
    first = conv_weights(load_checkpoint(trained).backbone)
    # A learning rate too small to move the weights: what the run ends with is its start.
    result = run(tmp_path, config(backbone="resnet8", val_size=16, lr=1e-12), init=trained)
    after = conv_weights(result.backbone)
    assert first
    assert first.keys() == after.keys()
    for name, weight in first.items():
        torch.testing.assert_close(after[name], weight)
    recorded = load_checkpoint(tmp_path / "last.pt").train_state["config"]
    assert recorded["init_sha256"] == init_digest(trained)


def test_a_resumed_run_needs_no_init(trained: Path, tmp_path: Path):
    cfg = config(backbone="resnet8", val_size=16, epochs=2)
    cfg = PretrainConfig(**{**cfg.__dict__, "init_sha256": init_digest(trained)})

    class Killed(Exception):
        pass

    def kill(stats) -> None:
        raise Killed

    with pytest.raises(Killed):
        pretrain(cfg, toy_arrays(64, 0), toy_arrays(32, 1), tmp_path, options=QUIET,
                 init=trained, on_epoch_end=kill)  # fmt: skip
    result = pretrain(cfg, toy_arrays(64, 0), toy_arrays(32, 1), tmp_path, resume=True,
                      options=QUIET)  # fmt: skip
    assert len(result.history) == 2


def test_weights_that_trained_on_the_validation_images_are_refused(tmp_path: Path):
    # Trained with no split: it saw every image this run would hold out.
    whole = tmp_path / "whole"
    run(whole, config(backbone="resnet8"))
    with pytest.raises(ConfigError, match="records no validation split"):
        run(tmp_path / "b", config(backbone="resnet8", val_size=16), init=whole / "best.pt")
    # Without a split of its own the run makes no choice on held-out images: allowed.
    run(tmp_path / "c", config(backbone="resnet8"), init=whole / "best.pt")


def test_another_split_is_refused(trained: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="another validation split"):
        run(tmp_path, config(backbone="resnet8", val_size=8), init=trained)


def test_another_backbone_or_a_changed_file_is_refused(trained: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="holds a resnet8 backbone, not resnet14"):
        run(tmp_path / "a", config(backbone="resnet14", val_size=16), init=trained)
    cfg = config(backbone="resnet8", val_size=16, init_sha256="0" * 64)
    with pytest.raises(ConfigError, match="changed since the run recorded"):
        pretrain(cfg, toy_arrays(64, 0), toy_arrays(32, 1), tmp_path / "b", options=QUIET,
                 init=trained)  # fmt: skip


def test_weights_of_another_shape_are_a_clear_error(tmp_path: Path):
    other = build_backbone("resnet8", num_classes=3)  # the toy data has more classes
    path = tmp_path / "three-classes.pt"
    save_checkpoint(path, other, meta={"dataset": "toy"})
    with pytest.raises(CheckpointError, match="does not fit this resnet8"):
        run(tmp_path / "run", config(backbone="resnet8"), init=path)


def test_a_missing_file_says_so(tmp_path: Path):
    with pytest.raises(ConfigError, match="there is no checkpoint file there"):
        init_digest(tmp_path / "nope.pt")


def test_the_same_split_size_on_other_data_names_the_data(trained: Path, tmp_path: Path):
    cfg = config(backbone="resnet8", val_size=16, init_sha256=init_digest(trained))
    other = toy_arrays(64, 7)  # another training set, the same number of images
    with pytest.raises(ConfigError, match="trained on another training set"):
        pretrain(cfg, other, toy_arrays(32, 1), tmp_path, options=QUIET, init=trained)


def test_weights_from_another_dataset_are_refused(trained: Path, tmp_path: Path):
    loaded = load_checkpoint(trained)
    path = tmp_path / "other-data.pt"
    save_checkpoint(path, loaded.backbone, meta={**loaded.meta, "dataset": "cifar10"})
    with pytest.raises(ConfigError, match="was trained on cifar10, this run is on toy"):
        run(tmp_path / "run", config(backbone="resnet8", val_size=16), init=path)


def test_a_folder_points_to_the_checkpoint_in_it(trained: Path):
    with pytest.raises(ConfigError, match="is a folder: give the checkpoint in it"):
        init_digest(trained.parent)
