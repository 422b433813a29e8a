"""Architecture inference and key renaming on synthetic state dicts (shapes only)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from budget_edge.models import build_backbone
from budget_edge.models import checkpoint_layouts as layouts


def shapes_of(name: str, **options: Any) -> dict[str, torch.Tensor]:
    """A state dict of our backbone ``name`` (its real keys and shapes)."""
    return dict(build_backbone(name, **options).state_dict())


def test_strip_prefix_only_when_every_key_has_it() -> None:
    t = torch.zeros(1)
    assert layouts.strip_prefix({"module.a": t, "module.b": t}) == {"a": t, "b": t}
    assert layouts.strip_prefix({"module.a": t, "b": t}) == {"module.a": t, "b": t}


def test_is_state_dict() -> None:
    assert layouts.is_state_dict({"a": torch.zeros(1)})
    assert not layouts.is_state_dict({})
    assert not layouts.is_state_dict({"a": 1})
    assert not layouts.is_state_dict([torch.zeros(1)])


@pytest.mark.parametrize("depth", [20, 56])
def test_akamaster_arch_from_our_cifar_resnet(depth: int) -> None:
    state = shapes_of(f"resnet{depth}", num_classes=100)
    assert layouts.akamaster_problem(state) is None
    assert layouts.akamaster_arch(state) == {
        "name": f"resnet{depth}",
        "num_classes": 100,
        "in_channels": 3,
        "input_size": [3, 32, 32],
        "shortcut": "A",
    }


def test_flat_resnet_round_trip_of_key_names() -> None:
    ours = shapes_of("resnet32", shortcut="B", in_channels=1)
    flat = {}
    for key, value in ours.items():
        key = key.replace("linear.", "fc.")
        for s in (1, 2, 3):
            key = key.replace(f"layer{s}.", f"blocks.{s - 1}.")
        flat[key] = value
    assert layouts.flat_resnet_problem(flat) is None
    assert not layouts.flat_resnet_is_imagenet(flat)
    assert layouts.flat_resnet_to_ours(flat).keys() == ours.keys()
    arch = layouts.flat_resnet_arch(flat)
    assert arch["name"] == "resnet32"
    assert arch["in_channels"] == 1
    assert arch["shortcut"] == "B"


def test_uneven_stages_are_reported() -> None:
    state = shapes_of("resnet20")
    del_keys = [k for k in state if k.startswith("layer3.2.")]
    for key in del_keys:
        del state[key]
    assert "different block counts [3, 3, 2]" in str(layouts.akamaster_problem(state))


@pytest.mark.parametrize(
    ("depth", "cardinality", "base_width", "widen"), [(29, 2, 4, 4), (56, 3, 8, 2)]
)
def test_resnext_arch(depth: int, cardinality: int, base_width: int, widen: int) -> None:
    state = shapes_of(
        f"resnext{depth}",
        num_classes=10,
        cardinality=cardinality,
        base_width=base_width,
        widen_factor=widen,
    )
    assert layouts.resnext_problem(state) is None
    arch = layouts.resnext_arch(state)
    assert arch == {
        "name": f"resnext{depth}",
        "num_classes": 10,
        "in_channels": 3,
        "input_size": [3, 32, 32],
        "cardinality": cardinality,
        "base_width": base_width,
        "widen_factor": widen,
    }


def torchvision_skeleton(name: str) -> dict[str, torch.Tensor]:
    """Only the keys torchvision inference reads, from the real architecture's shapes."""
    full = build_backbone(name, num_classes=3).state_dict()
    wanted = (
        "conv1.weight",
        "fc.weight",
        "layer1.0.conv1.weight",
        "layer1.0.conv2.weight",
        "layer1.0.conv3.weight",
    )
    skeleton = {k: v for k, v in full.items() if k in wanted}
    skeleton.update({k: torch.zeros(1) for k in full if k.endswith(".bn1.weight")})
    return skeleton


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d"]
)
def test_torchvision_arch_names(name: str) -> None:
    state = torchvision_skeleton(name)
    assert layouts.torchvision_problem(state) is None
    assert layouts.torchvision_arch(state) == {
        "name": name,
        "num_classes": 3,
        "in_channels": 3,
        "input_size": [3, 224, 224],
    }


def test_reference_agent_layout_checks() -> None:
    from budget_edge.agent import build_agent

    state = dict(build_agent(6).state_dict())
    assert layouts.reference_agent_problem(state) is None
    assert layouts.agent_takes_budget(state)
    state["features.blocks.0.1.conv1.weight"] = torch.zeros(1)
    assert "expected one block in each of 3 stages" in str(layouts.reference_agent_problem(state))
    legacy = {"features.fc.weight": torch.zeros(1), "logit.weight": torch.zeros(1)}
    assert layouts.agent_without_legacy_keys(legacy).keys() == {"logit.weight"}
