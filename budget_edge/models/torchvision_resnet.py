"""ImageNet-style ResNets with torchvision's exact module layout and keys.

resnet18/34/50/101 and resnext50_32x4d: 7x7 stride-2 stem, 3x3 stride-2
max-pool, four stages (`layer1..4`), global average pool, `fc`. Bottlenecks
put the stride on the 3x3 convolution (torchvision's "ResNet v1.5"). The
state-dict keys are torchvision's (`conv1`, `bn1`, `layer2.0.downsample.0`,
`fc`, ...), so its checkpoints load without torchvision installed.
Components are whole blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from budget_edge.models.backbone import Backbone, WholeBlock, check_input_size, check_positive
from budget_edge.models.flops import HW, conv2d_flops, linear_flops, pool_output_hw
from budget_edge.models.registry import register_backbone


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class TorchvisionBlock(WholeBlock):
    """Shared shortcut handling: `downsample` (1x1 conv + BN) or identity."""

    expansion = 1
    downsample: nn.Sequential | None

    def shortcut(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    def shortcut_convs(self) -> list[nn.Conv2d]:
        if self.downsample is None:
            return []
        return [m for m in self.downsample if isinstance(m, nn.Conv2d)]


class BasicBlock(TorchvisionBlock):
    """Two 3x3 convolutions (resnet18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Sequential | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def branch(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def branch_convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2]


class Bottleneck(TorchvisionBlock):
    """1x1 reduce, 3x3 (strided, grouped for ResNeXt), 1x1 expand by 4."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Sequential | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def branch(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))

    def branch_convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2, self.conv3]


class TorchvisionResNet(Backbone):
    """torchvision's ResNet/ResNeXt with droppable blocks."""

    def __init__(
        self,
        name: str,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: Sequence[int] | None = None,
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        check_positive("num_classes", num_classes)
        check_positive("in_channels", in_channels)
        size = check_input_size(input_size, in_channels, 224)
        config = {
            "name": name,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "input_size": list(size),
        }
        super().__init__(config, num_classes, in_channels, size)
        self.groups = groups
        self.base_width = width_per_group
        self.inplanes = 64

        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._init_weights()
        self._finish_init(["layer1", "layer2", "layer3", "layer4"])

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, n: int, stride: int
    ) -> nn.ModuleList:
        out = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(conv1x1(self.inplanes, out, stride), nn.BatchNorm2d(out))
        blocks = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = out
        for _ in range(1, n):
            blocks.append(block(out, planes, 1, None, self.groups, self.base_width))
        return nn.ModuleList(blocks)

    def _init_weights(self) -> None:
        # torchvision's initialisation (zero_init_residual=False).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)

    def head(self, x: Tensor) -> Tensor:
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def _stem_flops(self, hw: HW) -> tuple[int, HW]:
        flops, hw = conv2d_flops(self.conv1, hw)
        return flops, pool_output_hw(hw, 3, 2, 1)

    def _head_flops(self) -> int:
        return linear_flops(self.fc)


@register_backbone
def resnet18(
    num_classes: int = 10, in_channels: int = 3, input_size: Sequence[int] | None = None
) -> TorchvisionResNet:
    """ResNet-18 (torchvision layout): 8 blocks."""
    return TorchvisionResNet(
        "resnet18", BasicBlock, [2, 2, 2, 2], num_classes, in_channels, input_size
    )


@register_backbone
def resnet34(
    num_classes: int = 10, in_channels: int = 3, input_size: Sequence[int] | None = None
) -> TorchvisionResNet:
    """ResNet-34 (torchvision layout): 16 blocks."""
    return TorchvisionResNet(
        "resnet34", BasicBlock, [3, 4, 6, 3], num_classes, in_channels, input_size
    )


@register_backbone
def resnet50(
    num_classes: int = 10, in_channels: int = 3, input_size: Sequence[int] | None = None
) -> TorchvisionResNet:
    """ResNet-50 v1.5 (torchvision layout): 16 bottleneck blocks."""
    return TorchvisionResNet(
        "resnet50", Bottleneck, [3, 4, 6, 3], num_classes, in_channels, input_size
    )


@register_backbone
def resnet101(
    num_classes: int = 10, in_channels: int = 3, input_size: Sequence[int] | None = None
) -> TorchvisionResNet:
    """ResNet-101 v1.5 (torchvision layout): 33 bottleneck blocks."""
    return TorchvisionResNet(
        "resnet101", Bottleneck, [3, 4, 23, 3], num_classes, in_channels, input_size
    )


@register_backbone
def resnext50_32x4d(
    num_classes: int = 10, in_channels: int = 3, input_size: Sequence[int] | None = None
) -> TorchvisionResNet:
    """ResNeXt-50 32x4d (torchvision layout): 16 blocks, each one component."""
    return TorchvisionResNet(
        "resnext50_32x4d",
        Bottleneck,
        [3, 4, 6, 3],
        num_classes,
        in_channels,
        input_size,
        groups=32,
        width_per_group=4,
    )
