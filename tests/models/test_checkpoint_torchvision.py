"""torchvision state dicts (plain or DataParallel-prefixed) and BlockDrop's ImageNet
FlatResNet224 layout load into our torchvision-layout backbones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from budget_edge.errors import CheckpointError
from budget_edge.models import Backbone, build_backbone
from budget_edge.models.checkpoint import load_checkpoint
from budget_edge.models.checkpoint_formats import IMAGENET_MEAN, IMAGENET_STD

SMALL_INPUT = (2, 3, 64, 64)  # enough for four stride-2 stages, cheap on CPU


@pytest.fixture(scope="module")
def resnet18() -> Backbone:
    torch.manual_seed(0)
    net = build_backbone("resnet18", num_classes=1000)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "bn1.bias", "bn2.bias")):
                tensor.normal_(0, 0.1)
    return net.eval()


def same_outputs(a: Backbone, b: Backbone, seed: int = 0) -> None:
    torch.manual_seed(seed)
    x = torch.randn(*SMALL_INPUT)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1, 0, 1], [0, 1, 1, 0, 1, 1, 1, 0]][: len(x)])
    mask = mask[:, : a.num_components]
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a(x, mask), b(x, mask), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_resnet18_state_dict_loads_as_torchvision(
    tmp_path: Path, resnet18: Backbone, prefix: str
) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save({prefix + k: v for k, v in resnet18.state_dict().items()}, path)
    loaded = load_checkpoint(path)
    assert loaded.format == "torchvision"
    assert loaded.backbone.config == {
        "name": "resnet18",
        "num_classes": 1000,
        "in_channels": 3,
        "input_size": [3, 224, 224],
    }
    same_outputs(loaded.backbone, resnet18)
    assert loaded.meta["preprocessing"] == {
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "input_size": [3, 224, 224],
        "layout": "NCHW",
    }
    assert loaded.meta["dataset"] == "imagenet"


def test_resnext50_state_dict_loads_as_torchvision(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = build_backbone("resnext50_32x4d", num_classes=5, in_channels=1).eval()
    path = tmp_path / "resnext.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)
    loaded = load_checkpoint(path, format="torchvision")
    assert loaded.backbone.config["name"] == "resnext50_32x4d"
    assert loaded.backbone.config["in_channels"] == 1
    # One input channel: the 3-channel ImageNet statistics do not apply.
    assert loaded.meta["preprocessing"]["mean"] == [0.0]
    assert loaded.meta["warnings"]
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.backbone(x), net(x), rtol=1e-4, atol=1e-4)


def test_unsupported_torchvision_depth_is_named(tmp_path: Path, resnet18: Backbone) -> None:
    state = {k: v for k, v in resnet18.state_dict().items() if not k.startswith("layer1.1.")}
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"odd.pth.*blocks \[1, 2, 2, 2\].*not supported"):
        load_checkpoint(path)


def to_flat_resnet224(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision keys -> BlockDrop FlatResNet224 keys (blocks.s.b, ds.s.i)."""
    flat = {}
    for key, value in state.items():
        shortcut = re.match(r"layer(\d)\.0\.downsample\.(.*)", key)
        block = re.match(r"layer(\d)\.(.*)", key)
        if shortcut:
            key = f"ds.{int(shortcut.group(1)) - 1}.{shortcut.group(2)}"
        elif block:
            key = f"blocks.{int(block.group(1)) - 1}.{block.group(2)}"
        flat[key] = value
    return flat


def test_blockdrop_imagenet_resnet_loads_and_its_agent_is_left_out(
    tmp_path: Path, resnet18: Backbone
) -> None:
    # BlockDrop's Policy224 agent: a 4-stage FlatResNet224 extractor we do not build.
    agent = {
        "features.conv1.weight": torch.zeros(64, 3, 7, 7),
        "logit.weight": torch.zeros(8, 512),
        "logit.bias": torch.zeros(8),
        "vnet.weight": torch.zeros(1, 512),
        "vnet.bias": torch.zeros(1),
    }
    for stage in range(4):
        agent[f"features.blocks.{stage}.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "bd224.t7"
    torch.save({"resnet": to_flat_resnet224(resnet18.state_dict()), "agent": agent}, path)

    loaded = load_checkpoint(path)
    assert loaded.format == "blockdrop"
    assert loaded.backbone.config["name"] == "resnet18"
    assert loaded.agent is None
    assert any("agent was left out" in w for w in loaded.meta["warnings"])
    assert loaded.meta["preprocessing"]["input_size"] == [3, 224, 224]
    same_outputs(loaded.backbone, resnet18)


def test_wrong_shapes_in_a_torchvision_file(tmp_path: Path, resnet18: Backbone) -> None:
    state = dict(resnet18.state_dict())
    state["layer3.1.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="bad.pth: backbone tensor 'layer3.1.conv2.weight'"):
        load_checkpoint(path)
