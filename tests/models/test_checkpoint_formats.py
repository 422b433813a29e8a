"""Format detection and the meta recorded for foreign files (no modules built)."""

from __future__ import annotations

import pytest
import torch

from budget_edge.agent import build_agent
from budget_edge.errors import CheckpointError
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint_formats import (
    BLOCKDROP_AGENT_NOTE,
    CIFAR_MEAN,
    FORMATS,
    detect,
    known_formats,
)


def flat_resnet(depth: int, num_classes: int = 10) -> dict[str, torch.Tensor]:
    """BlockDrop FlatResNet32 keys and shapes, made from our CIFAR ResNet."""
    state = build_backbone(f"resnet{depth}", num_classes=num_classes, shortcut="B").state_dict()
    renamed = {}
    for key, value in state.items():
        key = key.replace("linear.", "fc.")
        for s in (1, 2, 3):
            key = key.replace(f"layer{s}.", f"blocks.{s - 1}.")
        renamed[key] = value
    return renamed


def blockdrop_agent(k: int) -> dict[str, torch.Tensor]:
    state = dict(build_agent(k).state_dict())
    state["logit.weight"] = state["logit.weight"][:, :64]
    state["vnet.weight"] = state["vnet.weight"][:, :64]
    return state


def test_detect_each_layout() -> None:
    resnet = flat_resnet(20)
    akamaster = build_backbone("resnet20").state_dict()
    assert detect({"format": "budget-edge"})[0] == "budget-edge"
    assert detect({"resnet": resnet})[0] == "blockdrop"
    assert detect({"resnet": resnet, "agent": blockdrop_agent(9)})[0] == "blockdrop"
    assert detect({"resnet": resnet, "agent": build_agent(9).state_dict()})[0] == "budgetnet"
    wrapped = {"state_dict": {f"module.{k}": v for k, v in akamaster.items()}, "best_prec1": 9.0}
    assert detect(wrapped)[0] == "akamaster"
    assert detect(dict(akamaster))[0] == "akamaster"
    torchvision = {f"module.{k}": v for k, v in build_backbone("resnet18").state_dict().items()}
    assert detect(torchvision)[0] == "torchvision"
    assert detect({"model": torchvision})[0] == "torchvision"


def test_detect_gives_the_reasons_when_nothing_fits() -> None:
    name, reasons = detect({"resnet": {"conv1.weight": torch.zeros(1)}})
    assert name is None
    assert set(reasons) == set(FORMATS)
    assert "missing fc.weight" in reasons["blockdrop"]


def test_known_formats_names_all() -> None:
    text = known_formats()
    assert all(name in text for name in FORMATS)


def test_blockdrop_meta_and_agent_padding() -> None:
    obj = {"resnet": flat_resnet(110), "agent": blockdrop_agent(54), "acc": torch.tensor(0.93)}
    converted = FORMATS["blockdrop"].convert(obj)
    assert converted.backbone_config["name"] == "resnet110"
    # BlockDrop's R110 was trained without normalisation.
    assert converted.meta["preprocessing"]["mean"] == [0.0, 0.0, 0.0]
    assert BLOCKDROP_AGENT_NOTE in converted.meta["warnings"]
    assert converted.meta["source"]["acc"] == pytest.approx(0.93)
    assert converted.agent_state is not None
    assert converted.agent_config is not None
    assert converted.agent_state["logit.weight"].shape == (54, 65)
    assert bool((converted.agent_state["logit.weight"][:, 64] == 0).all())
    assert converted.agent_config["num_components"] == 54


def test_budgetnet_meta_uses_cifar_statistics() -> None:
    converted = FORMATS["budgetnet"].convert({"resnet": flat_resnet(20, num_classes=100)})
    assert converted.meta["preprocessing"]["mean"] == CIFAR_MEAN
    assert converted.meta["dataset"] == "cifar100"
    assert converted.meta["warnings"] == []


def test_own_format_requires_its_parts() -> None:
    with pytest.raises(CheckpointError, match="'backbone' entry lacks a 'config' dict"):
        FORMATS["budget-edge"].convert({"format": "budget-edge", "version": 1})
    with pytest.raises(CheckpointError, match="invalid version"):
        FORMATS["budget-edge"].convert({"format": "budget-edge", "version": "1"})
