"""CIFAR ResNeXt (Xie et al. 2017) as used by BudgetNet: resnext29, resnext56.

Channel arithmetic and module names follow the paper's reference code
(anthonychen1251/BudgetNet, derived from prlz77/ResNeXt.pytorch) so its
checkpoints load as they are:

- stem `conv_1_3x3`: 3x3, 16 channels, `bn_1`, ReLU (no max-pool);
- stages `stage_1..3` with 16*w, 32*w, 64*w output channels (w = widen_factor,
  default 4: 64/128/256), (depth - 2) // 9 blocks each, stride 1/2/2 on the
  first block;
- each block has C = cardinality type-A paths of width
  int(base_width * out_channels / (16 * w)) (16/32/64 for the default 4x16d):
  1x1 `conv_reduce` -> `bn_reduce` -> ReLU -> 3x3 `conv_conv` (stride here) ->
  `bn` -> ReLU -> 1x1 `conv_expand`;
- the paths are summed, then ONE BatchNorm `bn`, plus the shortcut
  (`shortcut.shortcut_conv` 1x1 + `shortcut.shortcut_bn` where the channel
  count changes, identity otherwise), then ReLU;
- global average pool and `classifier`.

Components are single paths, in order (stage, block, path): K = blocks x C.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from budget_edge.errors import ConfigError
from budget_edge.models.backbone import (
    Backbone,
    BlockFlops,
    ResidualBlock,
    check_input_size,
    check_positive,
    kept_rows,
)
from budget_edge.models.flops import HW, chain_conv_flops, conv2d_flops, linear_flops
from budget_edge.models.registry import register_backbone

STEM_CHANNELS = 16


class ResNeXtPath(nn.Module):
    """One type-A path: 1x1 reduce, 3x3 (strided), 1x1 expand."""

    def __init__(self, in_channels: int, width: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.conv_conv = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.conv_expand = nn.Conv2d(width, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn_reduce(self.conv_reduce(x)))
        x = F.relu(self.bn(self.conv_conv(x)))
        return self.conv_expand(x)

    def convs(self) -> list[nn.Conv2d]:
        return [self.conv_reduce, self.conv_conv, self.conv_expand]


class ResNeXtBlock(ResidualBlock):
    """ReLU(shortcut(x) + BN(sum of the kept paths)); each path is a component."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, cardinality: int, width: int
    ) -> None:
        super().__init__()
        self.num_paths = cardinality
        self.path = nn.ModuleList(
            ResNeXtPath(in_channels, width, out_channels, stride) for _ in range(cardinality)
        )
        self.bn = nn.BatchNorm2d(out_channels)
        # An empty Sequential is the identity; its children carry the reference names.
        self.shortcut = nn.Sequential()
        if in_channels != out_channels or stride != 1:
            self.shortcut.add_module(
                "shortcut_conv",
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            )
            self.shortcut.add_module("shortcut_bn", nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor, paths: Sequence[int] | None = None) -> Tensor:
        short = self.shortcut(x)
        outputs = [self.path[p](x) for p in self.check_paths(paths)]
        # No kept path: the block BN still runs, on zeros.
        total = sum(outputs[1:], outputs[0]) if outputs else torch.zeros_like(short)
        return F.relu(short + self.bn(total))

    def skip(self, x: Tensor) -> Tensor:
        return self.forward(x, paths=[])

    def forward_masked(self, x: Tensor, keep: Tensor) -> Tensor:
        n = x.shape[0]
        keep = keep.cpu()
        counts = keep.sum(dim=0).tolist()
        if all(c == n for c in counts):
            return self.forward(x)
        short = self.shortcut(x)
        total = torch.zeros_like(short)
        for p, count in enumerate(counts):
            if count == n:
                total = total + self.path[p](x)
            elif count > 0:
                # Run the path only on the images that keep it, add into their rows.
                index = kept_rows(keep[:, p], x.device)
                total = total.index_add(0, index, self.path[p](x.index_select(0, index)))
        return F.relu(short + self.bn(total))

    def flops(self, hw: HW) -> tuple[BlockFlops, HW]:
        out_hw = hw
        paths = []
        for path in self.path:
            flops, out_hw = chain_conv_flops(cast(ResNeXtPath, path).convs(), hw)
            paths.append(flops)
        fixed = 0
        if len(self.shortcut) > 0:
            fixed = conv2d_flops(cast(nn.Conv2d, self.shortcut[0]), hw)[0]
        return BlockFlops(fixed=fixed, paths=tuple(paths)), out_hw


class CifarResNeXt(Backbone):
    """ResNeXt-`depth` (C x d) for 32x32 images; components are single paths."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: Sequence[int] | None = None,
        cardinality: int = 4,
        base_width: int = 16,
        widen_factor: int = 4,
    ) -> None:
        for option, value in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("cardinality", cardinality),
            ("base_width", base_width),
            ("widen_factor", widen_factor),
        ):
            check_positive(option, value)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
            raise ConfigError(f"depth={depth!r} is invalid for a CIFAR ResNeXt: use 9n + 2")
        size = check_input_size(input_size, in_channels, 32)
        config = {
            "name": f"resnext{depth}",
            "num_classes": num_classes,
            "in_channels": in_channels,
            "input_size": list(size),
            "cardinality": cardinality,
            "base_width": base_width,
            "widen_factor": widen_factor,
        }
        super().__init__(config, num_classes, in_channels, size)
        self.depth = depth
        self.cardinality = cardinality
        self.base_width = base_width
        self.widen_factor = widen_factor
        blocks_per_stage = (depth - 2) // 9
        widths = [STEM_CHANNELS * widen_factor * m for m in (1, 2, 4)]

        self.conv_1_3x3 = nn.Conv2d(in_channels, STEM_CHANNELS, 3, padding=1, bias=False)
        self.bn_1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.stage_1 = self._make_stage(STEM_CHANNELS, widths[0], blocks_per_stage, 1)
        self.stage_2 = self._make_stage(widths[0], widths[1], blocks_per_stage, 2)
        self.stage_3 = self._make_stage(widths[1], widths[2], blocks_per_stage, 2)
        self.classifier = nn.Linear(widths[2], num_classes)
        self._init_weights()
        self._finish_init(["stage_1", "stage_2", "stage_3"])

    def path_width(self, out_channels: int) -> int:
        """Channels inside each path of a block with `out_channels` outputs."""
        return int(self.base_width * out_channels / (STEM_CHANNELS * self.widen_factor))

    def _make_stage(
        self, in_channels: int, out_channels: int, n: int, stride: int
    ) -> nn.ModuleList:
        # out_channels / (16 * widen_factor) is 1, 2, 4: the width is never below base_width.
        width = self.path_width(out_channels)
        blocks = [ResNeXtBlock(in_channels, out_channels, stride, self.cardinality, width)]
        blocks += [
            ResNeXtBlock(out_channels, out_channels, 1, self.cardinality, width)
            for _ in range(n - 1)
        ]
        return nn.ModuleList(blocks)

    def _init_weights(self) -> None:
        # The reference initialisation: He (fan_out) convs, unit BN, zero biases.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.kaiming_normal_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def stem(self, x: Tensor) -> Tensor:
        return F.relu(self.bn_1(self.conv_1_3x3(x)))

    def head(self, x: Tensor) -> Tensor:
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def _stem_flops(self, hw: HW) -> tuple[int, HW]:
        return conv2d_flops(self.conv_1_3x3, hw)

    def _head_flops(self) -> int:
        return linear_flops(self.classifier)


@register_backbone
def resnext29(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: Sequence[int] | None = None,
    cardinality: int = 4,
    base_width: int = 16,
    widen_factor: int = 4,
) -> CifarResNeXt:
    """ResNeXt-29 (4x16d by default): 9 blocks, 36 paths."""
    return CifarResNeXt(
        29, num_classes, in_channels, input_size, cardinality, base_width, widen_factor
    )


@register_backbone
def resnext56(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: Sequence[int] | None = None,
    cardinality: int = 4,
    base_width: int = 16,
    widen_factor: int = 4,
) -> CifarResNeXt:
    """ResNeXt-56 (4x16d by default): 18 blocks, 72 paths."""
    return CifarResNeXt(
        56, num_classes, in_channels, input_size, cardinality, base_width, widen_factor
    )
