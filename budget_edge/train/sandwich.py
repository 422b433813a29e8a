"""Sandwich training for depth: one network whose sub-networks work on their own.

The sandwich rule with in-place distillation (Yu & Huang, Universally
Slimmable Networks, 2019; BigNAS, 2020), applied to depth as Once-for-All's
elastic depth does: every step trains

- the full network on the labels,
- the smallest sub-network (the first block of every stage: a ResNet-8 inside
  any CIFAR ResNet) and `random` sampled sub-networks on the full network's
  soft outputs (detached), so the small ones learn what the big one knows.

Sub-networks are depth masks over whole blocks. Half of the sampled ones keep a
prefix of each stage (a random depth per stage: the shapes of the ResNets a
user would train alone), the other half a random subset of blocks with a random
keep rate (the masks BudgetNet's agent draws). One mask per sub-network runs on
the whole batch, so dropped blocks cost nothing.

BatchNorm: only the full network's pass updates the running statistics.
Sub-networks see other activation statistics; they get their own, recomputed
for their mask (models/batchnorm.py) before they are evaluated or exported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from budget_edge.errors import ConfigError
from budget_edge.models import Backbone


def stage_lengths(backbone: Backbone) -> list[int]:
    """Blocks per stage, in order."""
    lengths: dict[int, set[int]] = {}
    for component in backbone.components:
        lengths.setdefault(component.stage, set()).add(component.block)
    return [len(lengths[stage]) for stage in sorted(lengths)]


def depth_mask(backbone: Backbone, depths: Sequence[int]) -> Tensor:
    """(K,) bool: every component of the first `depths[s]` blocks of stage s."""
    lengths = stage_lengths(backbone)
    if len(depths) != len(lengths) or not all(
        1 <= d <= n for d, n in zip(depths, lengths, strict=True)
    ):
        raise ConfigError(
            f"depths {list(depths)} do not fit stages of {lengths} blocks: give one depth "
            "per stage, each from 1 to the stage's length"
        )
    first = {
        stage: min(c.block for c in backbone.components if c.stage == stage)
        for stage in range(len(lengths))
    }
    return torch.tensor([c.block - first[c.stage] < depths[c.stage] for c in backbone.components])


def smallest_mask(backbone: Backbone) -> Tensor:
    """The first block of every stage: the smallest network the backbone holds."""
    return depth_mask(backbone, [1] * len(stage_lengths(backbone)))


def random_subset_mask(backbone: Backbone, generator: torch.Generator) -> Tensor:
    """Whole blocks kept at random with a keep rate drawn from U[0, 1] (at least one block)."""
    blocks = len(backbone.blocks)
    rate = float(torch.rand((), generator=generator))
    keep_block = torch.rand(blocks, generator=generator) < rate
    if not bool(keep_block.any()):
        keep_block[int(torch.randint(blocks, (), generator=generator))] = True
    return torch.tensor([bool(keep_block[c.block]) for c in backbone.components])


def random_depth_mask(backbone: Backbone, generator: torch.Generator) -> Tensor:
    """A prefix of every stage, each stage's depth uniform from 1 to its length."""
    depths = [
        int(torch.randint(1, n + 1, (), generator=generator)) for n in stage_lengths(backbone)
    ]
    return depth_mask(backbone, depths)


def sandwich_masks(backbone: Backbone, random: int, generator: torch.Generator) -> list[Tensor]:
    """The step's sub-networks after the full one: the smallest, then `random` sampled."""
    masks = [smallest_mask(backbone)]
    for i in range(random):
        sample = random_depth_mask if i % 2 == 0 else random_subset_mask
        masks.append(sample(backbone, generator))
    return masks


def distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Cross-entropy of the student against the teacher's soft outputs (detached)."""
    soft = F.softmax(teacher.detach().float(), dim=1)
    return -(soft * F.log_softmax(student.float(), dim=1)).sum(dim=1).mean()


@contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm normalises with batch statistics but leaves its running ones alone.

    momentum 0 makes the update running = 1 * running + 0 * batch.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, saved, strict=True):
            m.momentum = momentum
