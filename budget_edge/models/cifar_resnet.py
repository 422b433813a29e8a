"""CIFAR ResNets (He et al. 2016, Sec. 4.2): resnet8/14/20/32/44/56/110.

3x3 stem with 16 channels and no max-pool, three stages of n BasicBlocks with
16/32/64 channels (n = (depth - 2) / 6), global average pool, linear head.
Module names follow akamaster/pytorch_resnet_cifar10 so its weights map 1:1.
Both shortcut options are parameter-free:

- "A" (akamaster): x[:, :, ::2, ::2], then planes // 4 zero channels on EACH
  side of the channel axis.
- "B" (BlockDrop): 2x2 average pooling, then zero channels appended AFTER the
  input channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from budget_edge.errors import ConfigError
from budget_edge.models.backbone import Backbone, WholeBlock, check_input_size, check_positive
from budget_edge.models.flops import HW, conv2d_flops, linear_flops
from budget_edge.models.registry import register_backbone

SHORTCUTS = ("A", "B")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    """Parameter-free shortcut that halves H, W and widens the channels with zeros."""

    def __init__(self, option: str, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.option = option
        self.in_planes = in_planes
        self.planes = planes
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.option == "A":
            # akamaster pads planes // 4 on each side (planes = 2 * in_planes).
            side = self.planes // 4
            return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, side, side))
        # BlockDrop's DownsampleB: average pool, zeros after the input channels.
        pooled = F.avg_pool2d(x, self.stride) if self.stride > 1 else x
        return F.pad(pooled, (0, 0, 0, 0, 0, self.planes - self.in_planes))

    def extra_repr(self) -> str:
        return f"option={self.option}, {self.in_planes}->{self.planes}, stride={self.stride}"


class BasicBlock(WholeBlock):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus a parameter-free shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad_shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.pad_shortcut = PadShortcut(shortcut, in_planes, planes, stride)

    def branch(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x: Tensor) -> Tensor:
        return self.pad_shortcut(x)

    def branch_convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2]

    def shortcut_convs(self) -> list[nn.Conv2d]:
        return []


class CifarResNet(Backbone):
    """ResNet-`depth` for 32x32 images; components are the 3n blocks."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: Sequence[int] | None = None,
        shortcut: str = "A",
    ) -> None:
        check_positive("num_classes", num_classes)
        check_positive("in_channels", in_channels)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"depth={depth!r} is invalid for a CIFAR ResNet: use 6n + 2")
        if shortcut not in SHORTCUTS:
            raise ConfigError(
                f"shortcut={shortcut!r} is invalid: use 'A' (akamaster) or 'B' (BlockDrop)"
            )
        size = check_input_size(input_size, in_channels, 32)
        config = {
            "name": f"resnet{depth}",
            "num_classes": num_classes,
            "in_channels": in_channels,
            "input_size": list(size),
            "shortcut": shortcut,
        }
        super().__init__(config, num_classes, in_channels, size)
        self.depth = depth
        self.shortcut_option = shortcut
        n = (depth - 2) // 6

        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, 16, n, 1)
        self.layer2 = self._make_layer(16, 32, n, 2)
        self.layer3 = self._make_layer(32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        self._init_weights()
        self._finish_init(["layer1", "layer2", "layer3"])

    def _make_layer(self, in_planes: int, planes: int, n: int, stride: int) -> nn.ModuleList:
        blocks = [BasicBlock(in_planes, planes, stride, self.shortcut_option)]
        blocks += [BasicBlock(planes, planes, 1, self.shortcut_option) for _ in range(n - 1)]
        return nn.ModuleList(blocks)

    def _init_weights(self) -> None:
        # He initialisation as in the original CIFAR ResNets.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def stem(self, x: Tensor) -> Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def head(self, x: Tensor) -> Tensor:
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def _stem_flops(self, hw: HW) -> tuple[int, HW]:
        return conv2d_flops(self.conv1, hw)

    def _head_flops(self) -> int:
        return linear_flops(self.linear)


def _cifar_resnet(
    depth: int,
    num_classes: int,
    in_channels: int,
    input_size: Sequence[int] | None,
    shortcut: str,
) -> CifarResNet:
    return CifarResNet(depth, num_classes, in_channels, input_size, shortcut)


@register_backbone
def resnet8(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: Sequence[int] | None = None,
    shortcut: str = "A",
) -> CifarResNet:
    """CIFAR ResNet-8: 3 blocks (a small model of the zoo that BudgetNet is compared with)."""
    return _cifar_resnet(8, num_classes, in_channels, input_size, shortcut)


@register_backbone
def resnet14(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: Sequence[int] | None = None,
    shortcut: str = "A",
) -> CifarResNet:
    """CIFAR ResNet-14: 6 blocks (a small model of the zoo)."""
    return _cifar_resnet(14, num_classes, in_channels, input_size, shortcut)


@register_backbone
def resnet20(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: Sequence[int] | None = None,
    shortcut: str = "A",
) -> CifarResNet:
    """CIFAR ResNet-20: 9 blocks."""
    return _cifar_resnet(20, num_classes, in_channels, input_size, shortcut)


@register_backbone
def resnet32(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: Sequence[int] | None = None,
    shortcut: str = "A",
) -> CifarResNet:
    """CIFAR ResNet-32: 15 blocks."""
    return _cifar_resnet(32, num_classes, in_channels, input_size, shortcut)


@register_backbone
def resnet44(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: Sequence[int] | None = None,
    shortcut: str = "A",
) -> CifarResNet:
    """CIFAR ResNet-44: 21 blocks."""
    return _cifar_resnet(44, num_classes, in_channels, input_size, shortcut)


@register_backbone
def resnet56(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: Sequence[int] | None = None,
    shortcut: str = "A",
) -> CifarResNet:
    """CIFAR ResNet-56: 27 blocks."""
    return _cifar_resnet(56, num_classes, in_channels, input_size, shortcut)


@register_backbone
def resnet110(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: Sequence[int] | None = None,
    shortcut: str = "A",
) -> CifarResNet:
    """CIFAR ResNet-110: 54 blocks (the paper's URNet comparison)."""
    return _cifar_resnet(110, num_classes, in_channels, input_size, shortcut)
