"""The base classes every backbone shares: blocks, components, masks, FLOPs.

A backbone is a stem, a sequence of residual blocks and a head. Each block has
one or more paths; a component is one whole block (ResNet) or one path of a
block (ResNeXt). A mask (N, K) in {0, 1} says, per image, which of the K
components run. Dropped components cost nothing: each block runs its paths only
on the images that keep them (gather, run, scatter back), never multiply-by-zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from budget_edge.errors import ConfigError, InputError
from budget_edge.models.flops import HW, chain_conv_flops


@dataclass(frozen=True)
class Component:
    """One selectable unit, in mask order (stage, block, path).

    `stage` counts from 0, `block` is the global index into `Backbone.blocks`,
    `path` is None for whole-block components. `flops` is at the backbone's
    `input_size`.
    """

    index: int
    stage: int
    block: int
    path: int | None
    flops: int


@dataclass(frozen=True)
class BlockFlops:
    """FLOPs of one residual block for one image.

    `fixed` runs whenever the block's input does (a shortcut conv, also when the
    block is dropped); `paths` are the per-component FLOPs.
    """

    fixed: int
    paths: tuple[int, ...]

    @property
    def full(self) -> int:
        return self.fixed + sum(self.paths)


@dataclass(frozen=True)
class FlopsTable:
    """Analytic FLOPs of a backbone for one image of size `input_size`."""

    input_size: tuple[int, int, int]
    stem: int
    head: int
    blocks: tuple[BlockFlops, ...]
    components: tuple[int, ...]

    @property
    def total(self) -> int:
        """FLOPs of the full model (every component kept)."""
        return self.stem + self.head + sum(block.full for block in self.blocks)

    @property
    def base(self) -> int:
        """FLOPs that run whatever the mask: stem, head and shortcut convs."""
        return self.stem + self.head + sum(block.fixed for block in self.blocks)

    def masked(self, keep: Sequence[int | bool | float]) -> int:
        """FLOPs of one image run with mask row `keep` (length K)."""
        if len(keep) != len(self.components):
            raise InputError(
                f"mask row has {len(keep)} entries but the backbone has "
                f"{len(self.components)} components; pass one 0/1 entry per component"
            )
        return self.base + sum(f for f, k in zip(self.components, keep, strict=True) if k)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (what the export manifest records)."""
        return {
            "input_size": list(self.input_size),
            "stem": self.stem,
            "head": self.head,
            "blocks": [{"fixed": b.fixed, "paths": list(b.paths)} for b in self.blocks],
            "components": list(self.components),
            "total": self.total,
        }


class ResidualBlock(nn.Module):
    """A residual block with `num_paths` droppable paths.

    Subclasses implement `forward(x, paths)`, `skip(x)`, `forward_masked` and
    `flops`. `forward` and `skip` are the plain code paths the exporter traces;
    `forward_masked` is the batched gather/scatter path used by `Backbone`.
    """

    num_paths: int = 1

    def forward(self, x: Tensor, paths: Sequence[int] | None = None) -> Tensor:
        raise NotImplementedError

    def skip(self, x: Tensor) -> Tensor:
        """Output when every path of the block is dropped."""
        raise NotImplementedError

    def forward_masked(self, x: Tensor, keep: Tensor) -> Tensor:
        """Run on a batch where image i keeps path j iff `keep[i, j]` (bool).

        `keep` is best on the CPU (Backbone.forward puts it there): counting and
        finding the kept rows then never waits for the GPU.
        """
        raise NotImplementedError

    def flops(self, hw: HW) -> tuple[BlockFlops, HW]:
        """FLOPs for one input of spatial size `hw`, and the output size."""
        raise NotImplementedError

    def check_paths(self, paths: Sequence[int] | None) -> list[int]:
        """Validate a list of path indices; None means all paths."""
        if paths is None:
            return list(range(self.num_paths))
        chosen = [int(p) for p in paths]
        if len(set(chosen)) != len(chosen) or any(p < 0 or p >= self.num_paths for p in chosen):
            raise ConfigError(
                f"paths={list(paths)} is invalid for a block with {self.num_paths} "
                f"path(s): give distinct indices in 0..{self.num_paths - 1}"
            )
        return sorted(chosen)


class WholeBlock(ResidualBlock):
    """A ResNet block that is one component: out = ReLU(branch(x) + shortcut(x)).

    Dropped, it gives shortcut(x) (a shape-changing shortcut still runs, no
    ReLU), as in the reference implementations' per-sample inference.
    Subclasses define `branch`, `shortcut`, `branch_convs` and `shortcut_convs`.
    """

    def branch(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def shortcut(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def branch_convs(self) -> list[nn.Conv2d]:
        raise NotImplementedError

    def shortcut_convs(self) -> list[nn.Conv2d]:
        raise NotImplementedError

    def forward(self, x: Tensor, paths: Sequence[int] | None = None) -> Tensor:
        if not self.check_paths(paths):
            return self.skip(x)
        return F.relu(self.branch(x) + self.shortcut(x))

    def skip(self, x: Tensor) -> Tensor:
        return self.shortcut(x)

    def forward_masked(self, x: Tensor, keep: Tensor) -> Tensor:
        keep_rows = keep[:, 0].cpu()
        kept = int(keep_rows.sum())
        if kept == x.shape[0]:
            return self.forward(x)
        # The shortcut runs on the whole batch; the branch only on kept images.
        short = self.shortcut(x)
        if kept == 0:
            return short
        index = kept_rows(keep_rows, x.device)
        out = F.relu(self.branch(x.index_select(0, index)) + short.index_select(0, index))
        return short.index_copy(0, index, out)

    def flops(self, hw: HW) -> tuple[BlockFlops, HW]:
        branch, out_hw = chain_conv_flops(self.branch_convs(), hw)
        fixed = sum(chain_conv_flops([conv], hw)[0] for conv in self.shortcut_convs())
        return BlockFlops(fixed=fixed, paths=(branch,)), out_hw


def kept_rows(keep_column: Tensor, device: torch.device) -> Tensor:
    """Indices of the images that keep a component, as a tensor on `device`.

    Found on the CPU and copied without blocking, so a masked forward on a GPU
    synchronises once per batch (when the mask moves to the CPU), not per block.
    """
    return keep_column.cpu().nonzero().squeeze(1).to(device, non_blocking=True)


def check_input_size(
    input_size: Sequence[int] | None, in_channels: int, default_hw: int
) -> tuple[int, int, int]:
    """Normalise the `input_size` option to (C, H, W), checking it fits `in_channels`."""
    if input_size is None:
        return in_channels, default_hw, default_hw
    try:
        size = tuple(int(v) for v in input_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(
            f"input_size={input_size!r} is invalid: give (channels, height, width), "
            f"e.g. ({in_channels}, {default_hw}, {default_hw})"
        )
    if size[0] != in_channels:
        raise ConfigError(
            f"input_size={tuple(size)} has {size[0]} channels but in_channels={in_channels}; "
            "make them agree"
        )
    return size[0], size[1], size[2]


def check_positive(name: str, value: Any) -> int:
    """An integer option that must be >= 1 (num_classes, in_channels, ...)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} is invalid: give a positive integer")
    return value


class Backbone(nn.Module):
    """A residual network whose components can be dropped per image.

    Subclasses build their modules, then call `_finish_init(stage_names)` with
    the names of their stage ModuleLists (in order), and implement `stem`,
    `head`, `_stem_flops` and `_head_flops`.
    """

    def __init__(
        self,
        config: dict[str, Any],
        num_classes: int,
        in_channels: int,
        input_size: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.input_size = input_size
        self.components: list[Component] = []
        self._stage_names: list[str] = []
        self._block_starts: list[int] = []

    # -- to implement -----------------------------------------------------------

    def stem(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def head(self, x: Tensor) -> Tensor:
        """Global average pool and classifier."""
        raise NotImplementedError

    def _stem_flops(self, hw: HW) -> tuple[int, HW]:
        raise NotImplementedError

    def _head_flops(self) -> int:
        raise NotImplementedError

    # -- structure --------------------------------------------------------------

    def _finish_init(self, stage_names: Sequence[str]) -> None:
        """Record the stages and build the component list (needs all modules)."""
        self._stage_names = list(stage_names)
        table = self.flops()
        components: list[Component] = []
        starts: list[int] = []
        for b, (stage, block) in enumerate(self._stage_blocks()):
            starts.append(len(components))
            for p in range(block.num_paths):
                components.append(
                    Component(
                        index=len(components),
                        stage=stage,
                        block=b,
                        path=None if block.num_paths == 1 else p,
                        flops=table.components[len(components)],
                    )
                )
        self.components = components
        self._block_starts = starts + [len(components)]

    def _stage_blocks(self) -> list[tuple[int, ResidualBlock]]:
        pairs: list[tuple[int, ResidualBlock]] = []
        for stage, name in enumerate(self._stage_names):
            for block in getattr(self, name):
                pairs.append((stage, block))
        return pairs

    @property
    def blocks(self) -> list[ResidualBlock]:
        """Every residual block in order (stage, block).

        Read from the registered modules each time, so replicas made by
        DataParallel see their own blocks.
        """
        return [block for _, block in self._stage_blocks()]

    @property
    def num_components(self) -> int:
        return len(self.components)

    def block_components(self, b: int) -> list[int]:
        """Mask indices of block `b`'s components."""
        if not 0 <= b < len(self._block_starts) - 1:
            last = len(self._block_starts) - 2
            raise ConfigError(f"block {b} does not exist: blocks are 0..{last}")
        return list(range(self._block_starts[b], self._block_starts[b + 1]))

    # -- compute ----------------------------------------------------------------

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Logits for images `x` (N, C, H, W); `mask` (N, K) picks the components."""
        self._check_images(x)
        keep = None if mask is None else self._check_mask(mask, x)
        x = self.stem(x)
        starts = self._block_starts
        for b, block in enumerate(self.blocks):
            if keep is None:
                x = block(x)
            else:
                x = block.forward_masked(x, keep[:, starts[b] : starts[b + 1]])
        return self.head(x)

    def _check_images(self, x: Any) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError(
                f"images must be a tensor of shape (N, {self.in_channels}, H, W); got {shape}"
            )

    def _check_mask(self, mask: Any, x: Tensor) -> Tensor:
        """Validate a mask and return it as a bool tensor on the CPU.

        Blocks count and index kept images on the CPU; one copy here is the only
        GPU synchronisation a masked forward needs.
        """
        expected = (x.shape[0], self.num_components)
        if not isinstance(mask, Tensor):
            raise InputError(
                f"mask must be a torch.Tensor of shape {expected}, got {type(mask).__name__}"
            )
        if tuple(mask.shape) != expected:
            raise InputError(
                f"mask has shape {tuple(mask.shape)} but expected {expected}: one row per "
                f"image, one 0/1 column per component ({self.config.get('name')} has "
                f"{self.num_components})"
            )
        mask = mask.detach().cpu()
        if mask.dtype == torch.bool:
            return mask
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise InputError("mask values must be 0 or 1 (bool, int or float tensor)")
        return mask != 0

    def flops(self, input_size: Sequence[int] | None = None) -> FlopsTable:
        """Analytic FLOPs per part for one image of `input_size` (default: own)."""
        size = (
            self.input_size
            if input_size is None
            else check_input_size(input_size, self.in_channels, self.input_size[1])
        )
        stem, hw = self._stem_flops((size[1], size[2]))
        blocks: list[BlockFlops] = []
        for block in self.blocks:
            block_flops, hw = block.flops(hw)
            blocks.append(block_flops)
        return FlopsTable(
            input_size=size,
            stem=stem,
            head=self._head_flops(),
            blocks=tuple(blocks),
            components=tuple(f for block in blocks for f in block.paths),
        )
