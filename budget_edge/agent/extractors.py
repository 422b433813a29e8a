"""Image feature extractors for the policy network.

Two choices, both ending in a global average pool:

- ``resnet8``: BlockDrop's agent backbone (``FlatResNet32`` with one BasicBlock
  per stage, 16/32/64 channels). Module names follow the reference code so the
  paper's agent checkpoints load key for key: ``conv1``, ``bn1``,
  ``blocks.{s}.0.{conv1,bn1,conv2,bn2}``; the stage shortcuts ``ds`` have no
  parameters (2x2 average pool, then zero channels appended). As in BlockDrop's
  ``Policy32``, it sees the image at full resolution.
- ``light``: a 2x average pool of the image, then four narrow 3x3 conv-BN-ReLU
  layers (16, 32, 32, 64 channels). About 9.5x fewer FLOPs than ``resnet8`` at
  any input size (2.6 MFLOPs vs 24.5 MFLOPs at 32x32), for devices where the
  agent's cost matters next to a small backbone: at 32x32 ``resnet8`` adds 30%
  to resnet20's 81 MFLOPs, ``light`` 3% (resnet110, 506 MFLOPs: 4.8% vs 0.5%).

Both give 64 features. FLOPs follow the project convention (2 x MACs of
convolutions and linear layers) and are computed analytically, so they can be
written into an export manifest without running the model.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

NUM_FEATURES = 64


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Spatial size after a convolution or pooling window (no dilation)."""
    return (size + 2 * padding - kernel) // stride + 1


# Kept here rather than shared with budget_edge.models.flops: importing the
# models package would import checkpoint.py, which imports this package.
def conv2d_flops(conv: nn.Conv2d, height: int, width: int) -> tuple[int, int, int]:
    """FLOPs (2 x MACs) of ``conv`` on an input of ``height x width``; also the output size."""
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    padding = conv.padding
    assert not isinstance(padding, str), "string padding is not used here"
    ph, pw = padding
    out_h = conv_output_size(height, kh, sh, ph)
    out_w = conv_output_size(width, kw, sw, pw)
    macs = out_h * out_w * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw
    return 2 * macs, out_h, out_w


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBranch(nn.Module):
    """The residual branch of a BlockDrop BasicBlock: conv-BN-ReLU-conv-BN.

    As in the reference code the shortcut and the final ReLU belong to the
    caller, which owns the per-stage ``ds`` shortcut.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))

    def flops(self, height: int, width: int) -> tuple[int, int, int]:
        first, h, w = conv2d_flops(self.conv1, height, width)
        second, h, w = conv2d_flops(self.conv2, h, w)
        return first + second, h, w


class PoolPadShortcut(nn.Module):
    """BlockDrop's ``DownsampleB``: average-pool by ``stride``, append zero channels.

    Parameter-free, so it does not appear in state dicts.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            # ceil_mode matches the strided conv's output size on odd inputs;
            # on even inputs it is BlockDrop's plain AvgPool2d(stride).
            x = F.avg_pool2d(x, self.stride, ceil_mode=True)
        if self.extra_channels == 0:
            return x
        zeros = x.new_zeros(x.shape[0], self.extra_channels, x.shape[2], x.shape[3])
        return torch.cat([x, zeros], dim=1)


class ResNet8Extractor(nn.Module):
    """BlockDrop's ``FlatResNet32([1, 1, 1])`` without its classifier (``forward_full`` path)."""

    stage_planes = (16, 32, 64)
    stage_strides = (1, 2, 2)

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        blocks: list[nn.ModuleList] = []
        shortcuts: list[nn.Module] = []
        in_planes = 16
        for planes, stride in zip(self.stage_planes, self.stage_strides, strict=True):
            blocks.append(nn.ModuleList([BasicBranch(in_planes, planes, stride)]))
            if stride != 1 or in_planes != planes:
                shortcuts.append(PoolPadShortcut(in_planes, planes, stride))
            else:
                shortcuts.append(nn.Identity())
            in_planes = planes
        self.blocks = nn.ModuleList(blocks)
        self.ds = nn.ModuleList(shortcuts)
        self.num_features = NUM_FEATURES

    def stages(self) -> list[list[BasicBranch]]:
        """The residual branches, grouped by stage."""
        return [[cast(BasicBranch, b) for b in cast(nn.ModuleList, s)] for s in self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for stage, shortcut in zip(self.stages(), self.ds, strict=True):
            for index, branch in enumerate(stage):
                residual = shortcut(x) if index == 0 else x
                x = F.relu(residual + branch(x))
        # BlockDrop uses AvgPool2d(8), which is the global pool at 32x32; the
        # global pool keeps that and also works for other input sizes.
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def flops(self, height: int, width: int) -> int:
        total, h, w = conv2d_flops(self.conv1, height, width)
        for stage in self.stages():
            for branch in stage:
                block_flops, h, w = branch.flops(h, w)
                total += block_flops
        return total


class LightExtractor(nn.Module):
    """A cheap extractor: 2x average pool, then four narrow conv-BN-ReLU layers."""

    # (out_channels, stride) of each layer after the pool.
    layer_spec = ((16, 1), (32, 2), (32, 1), (64, 2))

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_planes = in_channels
        for planes, stride in self.layer_spec:
            layers += [conv3x3(in_planes, planes, stride), nn.BatchNorm2d(planes), nn.ReLU()]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.num_features = NUM_FEATURES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ceil_mode keeps the last row/column of odd-sized images.
        x = F.avg_pool2d(x, 2, ceil_mode=True)
        x = self.layers(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def flops(self, height: int, width: int) -> int:
        h, w = -(-height // 2), -(-width // 2)
        total = 0
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                layer_flops, h, w = conv2d_flops(layer, h, w)
                total += layer_flops
        return total


EXTRACTORS: dict[str, type[ResNet8Extractor] | type[LightExtractor]] = {
    "resnet8": ResNet8Extractor,
    "light": LightExtractor,
}
