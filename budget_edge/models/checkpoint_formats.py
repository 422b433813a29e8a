"""The checkpoint formats ``load_checkpoint`` reads, and how each maps to ours.

Every format is a pair of functions over the loaded top-level dict:
``problem(obj)`` (None when the file is in this format, else the reason it is
not) and ``convert(obj)`` (a :class:`Converted`: ``build_backbone`` arguments
and state dicts renamed to our modules, agent likewise, and the meta).
``detect`` tries them in ``FORMATS`` order; the order matters only for a
BlockDrop-layout ResNet saved without an agent, which BlockDrop and BudgetNet
both write: it is read as ``blockdrop`` (ask for ``budgetnet`` to get that
format's preprocessing).

Preprocessing recorded for foreign files (on [0, 1] RGB):

- budgetnet: the CIFAR mean/std both reference repositories use,
  (125.3, 123.0, 113.9)/255 and (63.0, 62.1, 66.7)/255 (BudgetNet normalises
  every CIFAR model).
- blockdrop: BlockDrop normalises only its ResNet-32 CIFAR-10 model that way;
  its other CIFAR models (R110_C10, R32_C100, R110_C100) were trained on
  unnormalised input, so those get mean 0, std 1 and a note in
  ``meta["warnings"]`` (we cannot tell R32_C10 from a retrained ResNet-32).
  ImageNet (FlatResNet224): ImageNet mean/std at 224x224.
- akamaster: ImageNet mean/std at 32x32 (what its training script uses).
- torchvision: ImageNet mean/std at 224x224.

A BlockDrop agent (``Policy32``) takes no budget. It is loaded with a zero
weight on the budget input, so it decides exactly as in BlockDrop whatever the
budget, and ``meta["warnings"]`` says so; fine-tuning teaches it budgets.
BlockDrop's ImageNet agent (``Policy224``) has no extractor here and is left
out with a warning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from budget_edge.errors import CheckpointError
from budget_edge.models import checkpoint_layouts as layouts
from budget_edge.models.checkpoint_layouts import StateDict

OWN_FORMAT = "budget-edge"
OWN_VERSION = 1

CIFAR_MEAN = [125.3 / 255, 123.0 / 255, 113.9 / 255]
CIFAR_STD = [63.0 / 255, 62.1 / 255, 66.7 / 255]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

BLOCKDROP_AGENT_NOTE = (
    "BlockDrop's agent takes no budget: it was loaded with a zero weight on the budget "
    "input, so it decides as in BlockDrop whatever the budget; fine-tune it to follow budgets"
)


@dataclass
class Converted:
    """A checkpoint in our terms, before any module is built."""

    backbone_config: dict[str, Any]
    backbone_state: StateDict
    agent_config: dict[str, Any] | None = None
    agent_state: StateDict | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    train_state: dict[str, Any] | None = None
    allocator_config: dict[str, Any] | None = None
    allocator_state: StateDict | None = None


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    description: str
    problem: Callable[[dict[str, Any]], str | None]
    convert: Callable[[dict[str, Any]], Converted]


# -- budget-edge ----------------------------------------------------------------------


def _own_problem(obj: dict[str, Any]) -> str | None:
    if obj.get("format") != OWN_FORMAT:
        return f"no 'format': '{OWN_FORMAT}' entry"
    return None


def _own_convert(obj: dict[str, Any]) -> Converted:
    version = obj.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"budget-edge checkpoint has an invalid version {version!r}")
    if version > OWN_VERSION:
        raise CheckpointError(
            f"it was written by a newer budget-edge (checkpoint version {version}, this "
            f"version reads up to {OWN_VERSION}); upgrade budget-edge to load it"
        )
    backbone_config, backbone_state = _own_part(obj, "backbone")
    agent_config, agent_state = (None, None)
    if obj.get("agent") is not None:
        agent_config, agent_state = _own_part(obj, "agent")
    meta = obj.get("meta") or {}
    train_state = obj.get("train_state")
    if not isinstance(meta, dict) or not isinstance(train_state, (dict, type(None))):
        raise CheckpointError("its 'meta' or 'train_state' entry is not a dict")
    converted = Converted(
        backbone_config, backbone_state, agent_config, agent_state, meta, train_state
    )
    if obj.get("allocator") is not None:  # optional: files without one load as before
        converted.allocator_config, converted.allocator_state = _own_part(obj, "allocator")
    return converted


def _own_part(obj: dict[str, Any], part: str) -> tuple[dict[str, Any], StateDict]:
    entry = obj.get(part)
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise CheckpointError(f"its '{part}' entry lacks a 'config' dict")
    state = entry.get("state_dict")
    if not layouts.is_state_dict(state):
        raise CheckpointError(f"its '{part}' entry lacks a 'state_dict' of tensors")
    digest = entry.get("sha256")  # files from before it was recorded have none
    if digest is not None and digest != state_digest(state):
        raise CheckpointError(
            f"its {part} weights do not match their SHA-256 (the file was "
            "damaged or edited after it was saved): use a good copy"
        )
    return dict(entry["config"]), state


def state_digest(state: StateDict) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: a flipped
    byte anywhere in the weights changes it (a pickle-level check does not see one)."""
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return h.hexdigest()


# -- helpers for foreign formats ------------------------------------------------------


def _preprocessing(
    mean: list[float], std: list[float], input_size: list[int], warnings: list[str]
) -> dict[str, Any]:
    channels = input_size[0]
    if len(mean) != channels:
        warnings.append(
            f"the model takes {channels} input channels, so the usual {len(mean)}-channel "
            "normalisation does not apply: mean 0 and std 1 recorded, set your own"
        )
        mean, std = [0.0] * channels, [1.0] * channels
    return {"mean": list(mean), "std": list(std), "input_size": list(input_size), "layout": "NCHW"}


def _foreign_meta(
    fmt: str,
    arch: dict[str, Any],
    mean: list[float],
    std: list[float],
    obj: dict[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    """Meta for an imported file: preprocessing, a dataset guess, what the file said."""
    preprocessing = _preprocessing(mean, std, arch["input_size"], warnings)
    source: dict[str, Any] = {"format": fmt}
    source.update(_scalar_entries(obj))
    return {
        "preprocessing": preprocessing,
        "dataset": _dataset_guess(arch),
        "source": source,
        "warnings": warnings,
    }


def _dataset_guess(arch: dict[str, Any]) -> str | None:
    num_classes = arch["num_classes"]
    if arch["input_size"][1] >= 224:
        return "imagenet" if num_classes == 1000 else None
    return {10: "cifar10", 100: "cifar100"}.get(num_classes)


def _scalar_entries(obj: dict[str, Any]) -> dict[str, Any]:
    """Top-level numbers and strings (best_prec1, epoch, acc...), tensors of one value as floats."""
    found: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            found[str(key)] = value
    return found


def _unwrap_state(obj: dict[str, Any], wrappers: tuple[str, ...]) -> StateDict | None:
    """The state dict in ``obj``: ``obj`` itself or under one of ``wrappers``; no ``module.``."""
    if layouts.is_state_dict(obj):
        return layouts.strip_prefix(obj)
    for key in wrappers:
        if layouts.is_state_dict(obj.get(key)):
            return layouts.strip_prefix(obj[key])
    return None


def _reference_parts(obj: dict[str, Any]) -> tuple[StateDict | None, StateDict | None]:
    """The ``resnet`` and ``agent`` state dicts of a BlockDrop/BudgetNet file."""
    resnet = obj.get("resnet")
    agent = obj.get("agent", obj.get("net"))
    resnet_state = layouts.strip_prefix(resnet) if layouts.is_state_dict(resnet) else None
    agent_state = None
    if layouts.is_state_dict(agent):
        agent_state = layouts.agent_without_legacy_keys(layouts.strip_prefix(agent))
    return resnet_state, agent_state


def _agent_entry(
    agent: StateDict, input_size: list[int], warnings: list[str]
) -> tuple[dict[str, Any], StateDict]:
    """Config and state of our resnet8 agent for a reference agent state dict."""
    state = dict(agent)
    if not layouts.agent_takes_budget(state):
        # Zero weight on the appended budget input: BlockDrop's decisions, unchanged.
        for head in ("logit", "vnet"):
            weight = state[f"{head}.weight"]
            state[f"{head}.weight"] = torch.cat([weight, weight.new_zeros(len(weight), 1)], 1)
        warnings.append(BLOCKDROP_AGENT_NOTE)
    config = {
        "num_components": int(state["logit.weight"].shape[0]),
        "extractor": "resnet8",
        "in_channels": int(state["features.conv1.weight"].shape[1]),
        "input_size": list(input_size),
    }
    return config, state


# -- blockdrop ----------------------------------------------------------------------


def _blockdrop_problem(obj: dict[str, Any]) -> str | None:
    resnet, agent = _reference_parts(obj)
    if resnet is None:
        return "no 'resnet' state dict"
    problem = layouts.flat_resnet_problem(resnet)
    if problem:
        return f"'resnet' is not in BlockDrop's FlatResNet layout ({problem})"
    if agent is not None and not layouts.reference_agent_problem(agent):
        if layouts.agent_takes_budget(agent):
            return "its agent takes a budget input (that is BudgetNet's agent)"
    return None


def _blockdrop_convert(obj: dict[str, Any]) -> Converted:
    resnet, agent = _reference_parts(obj)
    assert resnet is not None
    warnings: list[str] = []
    if layouts.flat_resnet_is_imagenet(resnet):
        state = layouts.flat_resnet224_to_torchvision(resnet)
        arch = _torchvision_arch_or_fail(state)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        state = layouts.flat_resnet_to_ours(resnet)
        arch = layouts.flat_resnet_arch(resnet)
        mean, std = _blockdrop_cifar_normalisation(arch, warnings)
    converted = Converted(arch, state)
    if agent is not None:
        problem = layouts.reference_agent_problem(agent)
        if problem:
            warnings.append(f"the file's agent was left out: its layout is unsupported ({problem})")
        else:
            converted.agent_config, converted.agent_state = _agent_entry(
                agent, arch["input_size"], warnings
            )
    converted.meta = _foreign_meta("blockdrop", arch, mean, std, obj, warnings)
    return converted


def _blockdrop_cifar_normalisation(
    arch: dict[str, Any], warnings: list[str]
) -> tuple[list[float], list[float]]:
    if arch["name"] == "resnet32" and arch["num_classes"] == 10:
        return CIFAR_MEAN, CIFAR_STD
    warnings.append(
        "BlockDrop trained this CIFAR model on unnormalised [0, 1] input (only its "
        "ResNet-32 CIFAR-10 model is normalised): mean 0 and std 1 recorded"
    )
    return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]


# -- budgetnet ----------------------------------------------------------------------


def _budgetnet_problem(obj: dict[str, Any]) -> str | None:
    resnet, agent = _reference_parts(obj)
    if resnet is None:
        return "no 'resnet' state dict"
    resnext = layouts.resnext_problem(resnet)
    if resnext is not None:
        flat = layouts.flat_resnet_problem(resnet)
        if flat is not None:
            return f"'resnet' is neither the reference ResNeXt ({resnext}) nor FlatResNet ({flat})"
        if layouts.flat_resnet_is_imagenet(resnet):
            return "'resnet' is BlockDrop's ImageNet FlatResNet224 (BudgetNet is CIFAR only)"
    if agent is not None:
        problem = layouts.reference_agent_problem(agent)
        if problem:
            return f"its agent is not BudgetNet's Policy32BudgetConstraint ({problem})"
        if not layouts.agent_takes_budget(agent):
            return "its agent takes no budget input (that is BlockDrop's agent)"
    return None


def _budgetnet_convert(obj: dict[str, Any]) -> Converted:
    resnet, agent = _reference_parts(obj)
    assert resnet is not None
    if layouts.resnext_problem(resnet) is None:
        arch, state = layouts.resnext_arch(resnet), resnet
    else:
        arch, state = layouts.flat_resnet_arch(resnet), layouts.flat_resnet_to_ours(resnet)
    warnings: list[str] = []
    converted = Converted(arch, state)
    if agent is not None:
        converted.agent_config, converted.agent_state = _agent_entry(
            agent, arch["input_size"], warnings
        )
    converted.meta = _foreign_meta("budgetnet", arch, CIFAR_MEAN, CIFAR_STD, obj, warnings)
    return converted


# -- akamaster ----------------------------------------------------------------------


def _akamaster_state(obj: dict[str, Any]) -> StateDict | None:
    return _unwrap_state(obj, ("state_dict",))


def _akamaster_problem(obj: dict[str, Any]) -> str | None:
    state = _akamaster_state(obj)
    if state is None:
        return "no 'state_dict' of tensors and not a plain state dict"
    problem = layouts.akamaster_problem(state)
    return f"not the akamaster CIFAR ResNet layout ({problem})" if problem else None


def _akamaster_convert(obj: dict[str, Any]) -> Converted:
    state = _akamaster_state(obj)
    assert state is not None
    arch = layouts.akamaster_arch(state)
    meta = _foreign_meta("akamaster", arch, IMAGENET_MEAN, IMAGENET_STD, obj, [])
    return Converted(arch, state, meta=meta)


# -- torchvision --------------------------------------------------------------------


def _torchvision_state(obj: dict[str, Any]) -> StateDict | None:
    # torchvision's reference training scripts save {"model": state_dict, ...}.
    return _unwrap_state(obj, ("state_dict", "model"))


def _torchvision_problem(obj: dict[str, Any]) -> str | None:
    state = _torchvision_state(obj)
    if state is None:
        return "not a plain state dict of tensors"
    problem = layouts.torchvision_problem(state)
    return f"not the torchvision ResNet layout ({problem})" if problem else None


def _torchvision_arch_or_fail(state: StateDict) -> dict[str, Any]:
    arch = layouts.torchvision_arch(state)
    if isinstance(arch, str):
        raise CheckpointError(arch)
    return arch


def _torchvision_convert(obj: dict[str, Any]) -> Converted:
    state = _torchvision_state(obj)
    assert state is not None
    arch = _torchvision_arch_or_fail(state)
    meta = _foreign_meta("torchvision", arch, IMAGENET_MEAN, IMAGENET_STD, obj, [])
    return Converted(arch, state, meta=meta)


FORMATS: dict[str, CheckpointFormat] = {
    f.name: f
    for f in (
        CheckpointFormat(
            OWN_FORMAT, "this project's own files (save_checkpoint)", _own_problem, _own_convert
        ),
        CheckpointFormat(
            "blockdrop",
            "BlockDrop: {'resnet': FlatResNet state dict, optional 'agent': Policy32}",
            _blockdrop_problem,
            _blockdrop_convert,
        ),
        CheckpointFormat(
            "budgetnet",
            "BudgetNet reference code: {'resnet': CifarResNeXt or FlatResNet32, "
            "'agent': Policy32BudgetConstraint}",
            _budgetnet_problem,
            _budgetnet_convert,
        ),
        CheckpointFormat(
            "akamaster",
            "akamaster/pytorch_resnet_cifar10: {'state_dict': 'module.'-prefixed, 'best_prec1'}",
            _akamaster_problem,
            _akamaster_convert,
        ),
        CheckpointFormat(
            "torchvision",
            "torchvision ResNet/ResNeXt state dict (optionally 'module.'-prefixed)",
            _torchvision_problem,
            _torchvision_convert,
        ),
    )
}


def detect(obj: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    """The first format that fits ``obj``, and why each earlier one did not."""
    reasons: dict[str, str] = {}
    for name, fmt in FORMATS.items():
        problem = fmt.problem(obj)
        if problem is None:
            return name, reasons
        reasons[name] = problem
    return None, reasons


def known_formats() -> str:
    """One line per format, for error messages."""
    return "; ".join(f"{name} ({fmt.description})" for name, fmt in FORMATS.items())
