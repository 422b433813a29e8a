"""State-dict layouts of other code bases: recognise them, infer the
architecture from tensor shapes and key counts, and rename keys to ours.

Each ``*_problem`` function returns None when a state dict has the layout, or
a short reason why not (used in error messages). Each ``*_arch`` function
returns the ``build_backbone`` arguments for it; ``*_to_ours`` renames keys.
All take state dicts with any ``module.`` prefix already removed.

Layouts (key names as the code bases write them):

- akamaster CIFAR ResNet: ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``,
  ``linear``. Same names as our CIFAR ResNets; option-A shortcuts.
- BlockDrop ``FlatResNet32`` (CIFAR): ``conv1``, ``bn1``,
  ``blocks.{s}.{b}.{conv1,bn1,conv2,bn2}``, ``fc``; parameter-free ``ds.{s}``
  shortcuts = our option "B".
- BlockDrop ``FlatResNet224`` (ImageNet): as above with four stages, torchvision
  blocks and ``ds.{s}.{0,1}`` (1x1 conv + BN) = torchvision's ``downsample``.
- BudgetNet ``CifarResNeXt``: ``conv_1_3x3``, ``bn_1``,
  ``stage_{1,2,3}.{i}.path.{j}.*``, ``stage_s.{i}.bn``,
  ``stage_s.{i}.shortcut.{shortcut_conv,shortcut_bn}``, ``classifier``. Same
  names as our ResNeXt.
- torchvision ResNet/ResNeXt: ``conv1``, ``bn1``, ``layer{1..4}.{i}.*``,
  ``downsample.{0,1}``, ``fc``. Same names as our torchvision layout.
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard

from torch import Tensor

StateDict = dict[str, Tensor]

# torchvision depth names by (block type, blocks per stage, groups, width per group).
TorchvisionSignature = tuple[str, tuple[int, ...], int, int]
TORCHVISION_ARCHS: dict[TorchvisionSignature, str] = {
    ("basic", (2, 2, 2, 2), 1, 64): "resnet18",
    ("basic", (3, 4, 6, 3), 1, 64): "resnet34",
    ("bottleneck", (3, 4, 6, 3), 1, 64): "resnet50",
    ("bottleneck", (3, 4, 23, 3), 1, 64): "resnet101",
    ("bottleneck", (3, 4, 6, 3), 32, 4): "resnext50_32x4d",
}


def strip_prefix(state: StateDict, prefix: str = "module.") -> StateDict:
    """Drop ``prefix`` (DataParallel's ``module.``) when every key has it."""
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix) :]: value for key, value in state.items()}
    return state


def is_state_dict(obj: Any) -> TypeGuard[StateDict]:
    """A non-empty dict from strings to tensors."""
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _counts(state: StateDict, pattern: str) -> dict[int, int]:
    """For a regex with two integer groups (outer, inner): outer -> number of inner indices."""
    seen: dict[int, set[int]] = {}
    regex = re.compile(pattern)
    for key in state:
        match = regex.match(key)
        if match:
            seen.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    return {outer: len(inner) for outer, inner in sorted(seen.items())}


def _missing(state: StateDict, keys: list[str]) -> str | None:
    absent = [key for key in keys if key not in state]
    return f"missing {', '.join(absent)}" if absent else None


def _equal_stages(counts: dict[int, int], stages: list[int]) -> str | None:
    """None when every stage in ``stages`` exists and all have the same block count."""
    if sorted(counts) != stages:
        return f"stages {sorted(counts)} found, expected {stages}"
    if len(set(counts.values())) != 1:
        return f"stages have different block counts {list(counts.values())}"
    return None


# -- CIFAR ResNets ------------------------------------------------------------------


def akamaster_problem(state: StateDict) -> str | None:
    problem = _missing(state, ["conv1.weight", "linear.weight", "layer1.0.conv1.weight"])
    if problem:
        return problem
    return _equal_stages(_counts(state, r"layer(\d+)\.(\d+)\."), [1, 2, 3])


def akamaster_arch(state: StateDict) -> dict[str, Any]:
    blocks = next(iter(_counts(state, r"layer(\d+)\.(\d+)\.").values()))
    return _cifar_resnet_arch(blocks, state["conv1.weight"], state["linear.weight"], "A")


def flat_resnet_problem(state: StateDict) -> str | None:
    """BlockDrop's FlatResNet32 (3 stages, CIFAR) or FlatResNet224 (4 stages)."""
    problem = _missing(state, ["conv1.weight", "fc.weight", "blocks.0.0.conv1.weight"])
    if problem:
        return problem
    counts = _counts(state, r"blocks\.(\d+)\.(\d+)\.")
    if len(counts) == 4:
        return _missing(state, ["ds.1.0.weight"])
    return _equal_stages(counts, [0, 1, 2])


def flat_resnet_is_imagenet(state: StateDict) -> bool:
    return len(_counts(state, r"blocks\.(\d+)\.(\d+)\.")) == 4


def flat_resnet_arch(state: StateDict) -> dict[str, Any]:
    blocks = next(iter(_counts(state, r"blocks\.(\d+)\.(\d+)\.").values()))
    return _cifar_resnet_arch(blocks, state["conv1.weight"], state["fc.weight"], "B")


def flat_resnet_to_ours(state: StateDict) -> StateDict:
    """FlatResNet32 keys -> our CIFAR ResNet keys (``blocks.s.b`` -> ``layer{s+1}.b``)."""
    renamed: StateDict = {}
    for key, value in state.items():
        block = re.match(r"blocks\.(\d+)\.(.*)", key)
        if block:
            key = f"layer{int(block.group(1)) + 1}.{block.group(2)}"
        elif key.startswith("fc."):
            key = "linear." + key[len("fc.") :]
        renamed[key] = value
    return renamed


def flat_resnet224_to_torchvision(state: StateDict) -> StateDict:
    """FlatResNet224 keys -> torchvision keys (``ds.s.i`` -> ``layer{s+1}.0.downsample.i``)."""
    renamed: StateDict = {}
    for key, value in state.items():
        block = re.match(r"blocks\.(\d+)\.(.*)", key)
        shortcut = re.match(r"ds\.(\d+)\.(.*)", key)
        if block:
            key = f"layer{int(block.group(1)) + 1}.{block.group(2)}"
        elif shortcut:
            key = f"layer{int(shortcut.group(1)) + 1}.0.downsample.{shortcut.group(2)}"
        renamed[key] = value
    return renamed


def _cifar_resnet_arch(
    blocks_per_stage: int, stem: Tensor, classifier: Tensor, shortcut: str
) -> dict[str, Any]:
    in_channels = int(stem.shape[1])
    return {
        "name": f"resnet{6 * blocks_per_stage + 2}",
        "num_classes": int(classifier.shape[0]),
        "in_channels": in_channels,
        "input_size": [in_channels, 32, 32],
        "shortcut": shortcut,
    }


# -- BudgetNet ResNeXt --------------------------------------------------------------


def resnext_problem(state: StateDict) -> str | None:
    problem = _missing(
        state,
        [
            "conv_1_3x3.weight",
            "classifier.weight",
            "stage_1.0.path.0.conv_reduce.weight",
            "stage_1.0.bn.weight",
        ],
    )
    if problem:
        return problem
    blocks = _resnext_blocks(state)
    if len(set(blocks.values())) != 1:
        return f"ResNeXt stages have block counts {list(blocks.values())}"
    return None


def _resnext_blocks(state: StateDict) -> dict[int, int]:
    """Stage (1..3) -> number of blocks, from ``stage_{s}.{i}.*`` keys."""
    return {
        s: len({key.split(".")[1] for key in state if key.startswith(f"stage_{s}.")})
        for s in (1, 2, 3)
    }


def resnext_arch(state: StateDict) -> dict[str, Any]:
    """``build_backbone`` arguments for a BudgetNet CifarResNeXt state dict.

    depth = 9n + 2 (n blocks per stage); cardinality = paths per block;
    widen_factor = first stage's channels / 16; base_width = the first stage's
    path width (the reference scales it by channels / (16 * widen_factor) = 1).
    """
    blocks = _resnext_blocks(state)[1]
    paths = _counts(state, r"stage_1\.(\d+)\.path\.(\d+)\.")[0]
    stem = state["conv_1_3x3.weight"]
    in_channels = int(stem.shape[1])
    return {
        "name": f"resnext{9 * blocks + 2}",
        "num_classes": int(state["classifier.weight"].shape[0]),
        "in_channels": in_channels,
        "input_size": [in_channels, 32, 32],
        "cardinality": paths,
        "base_width": int(state["stage_1.0.path.0.conv_reduce.weight"].shape[0]),
        "widen_factor": int(state["stage_1.0.bn.weight"].shape[0]) // 16,
    }


# -- torchvision ResNet / ResNeXt ---------------------------------------------------


def torchvision_problem(state: StateDict) -> str | None:
    problem = _missing(state, ["conv1.weight", "fc.weight", "layer1.0.conv1.weight"])
    if problem:
        return problem
    return _stages_present(_counts(state, r"layer(\d+)\.(\d+)\."), [1, 2, 3, 4])


def _stages_present(counts: dict[int, int], stages: list[int]) -> str | None:
    if sorted(counts) != stages:
        return f"stages {sorted(counts)} found, expected {stages}"
    return None


def torchvision_signature(state: StateDict) -> TorchvisionSignature:
    """(block type, blocks per stage, groups, width per group) of a torchvision ResNet."""
    counts = _counts(state, r"layer(\d+)\.(\d+)\.")
    bottleneck = "layer1.0.conv3.weight" in state
    groups, width_per_group = 1, 64
    if bottleneck:
        # conv2 of the first bottleneck: (groups * width_per_group, width_per_group, 3, 3).
        conv2 = state["layer1.0.conv2.weight"]
        width_per_group = int(conv2.shape[1])
        groups = int(conv2.shape[0]) // width_per_group
    kind = "bottleneck" if bottleneck else "basic"
    return kind, tuple(counts.values()), groups, width_per_group


def torchvision_arch(state: StateDict) -> dict[str, Any] | str:
    """``build_backbone`` arguments, or a reason why the architecture is not supported."""
    signature = torchvision_signature(state)
    name = TORCHVISION_ARCHS.get(signature)
    if name is None:
        kind, blocks, groups, width = signature
        known = ", ".join(TORCHVISION_ARCHS.values())
        return (
            f"a torchvision-style {kind} ResNet with blocks {list(blocks)}, groups {groups}, "
            f"width per group {width} is not supported (supported: {known})"
        )
    in_channels = int(state["conv1.weight"].shape[1])
    return {
        "name": name,
        "num_classes": int(state["fc.weight"].shape[0]),
        "in_channels": in_channels,
        "input_size": [in_channels, 224, 224],
    }


# -- agents -------------------------------------------------------------------------


def reference_agent_problem(state: StateDict) -> str | None:
    """None for a BlockDrop Policy32 / BudgetNet Policy32BudgetConstraint agent."""
    problem = _missing(
        state, ["features.conv1.weight", "logit.weight", "logit.bias", "vnet.weight"]
    )
    if problem:
        return problem
    counts = _counts(state, r"features\.blocks\.(\d+)\.(\d+)\.")
    if counts != {0: 1, 1: 1, 2: 1}:
        return f"agent features have blocks {counts}, expected one block in each of 3 stages"
    if int(state["logit.weight"].shape[1]) not in (64, 65):
        return f"agent logit takes {state['logit.weight'].shape[1]} inputs, expected 64 or 65"
    return None


def agent_takes_budget(state: StateDict) -> bool:
    """BudgetNet's agent appends the budget to its 64 image features; BlockDrop's does not."""
    return int(state["logit.weight"].shape[1]) == 65


def agent_without_legacy_keys(state: StateDict) -> StateDict:
    """Drop ``features.fc.*``: old reference agents kept the extractor's classifier."""
    return {k: v for k, v in state.items() if not k.startswith("features.fc.")}
