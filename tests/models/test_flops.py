"""Analytic FLOPs against FlopCounterMode, for every registered backbone."""

import pytest
import torch
from torch import nn

from budget_edge.models import build_backbone, list_backbones
from budget_edge.models.flops import conv2d_flops, counted_flops, linear_flops

# Torchvision-layout nets are measured at 64x64 to keep the test fast.
SMALL_SIZE = {"cifar": (3, 32, 32), "imagenet": (3, 64, 64)}


def _size(name: str) -> tuple[int, int, int]:
    net_kind = "imagenet" if name.startswith(("resnet18", "resnet34", "resnet50",
                                              "resnet101", "resnext50")) else "cifar"
    return SMALL_SIZE[net_kind]


@pytest.mark.parametrize("name", list_backbones())
def test_analytic_flops_match_counted(name):
    size = _size(name)
    torch.manual_seed(0)
    net = build_backbone(name, input_size=size).eval()
    table = net.flops()
    x = torch.randn(1, *size)
    with torch.no_grad():
        assert counted_flops(net, x) == table.total
        # One random mask with about half the components: dropped ones cost nothing.
        gen = torch.Generator().manual_seed(1)
        mask = (torch.rand(1, net.num_components, generator=gen) < 0.5).float()
        assert counted_flops(net, x, mask) == table.masked(mask[0].tolist())
        assert counted_flops(net, x, torch.zeros_like(mask)) == table.base
        assert counted_flops(net.stem, x) == table.stem


def test_conv_and_linear_helpers():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=False)
    flops, hw = conv2d_flops(conv, (15, 15))
    assert hw == (8, 8)
    assert flops == counted_flops(conv, torch.randn(1, 8, 15, 15))
    linear = nn.Linear(5, 3)
    assert linear_flops(linear) == counted_flops(linear, torch.randn(1, 5))
