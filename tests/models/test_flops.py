"""Analytic FLOPs against FlopCounterMode, for every registered backbone."""

import pytest
import torch
from torch import nn

from budget_edge.errors import ConfigError
from budget_edge.models import build_backbone, list_backbones
from budget_edge.models.flops import conv2d_flops, counted_flops, linear_flops, pool_output_hw


@pytest.mark.parametrize("name", list_backbones())
def test_analytic_flops_match_counted(name):
    torch.manual_seed(0)
    net = build_backbone(name).eval()
    # ImageNet-style nets (default 224x224) are measured at 64x64 to stay fast.
    size = (3, 64, 64) if net.input_size[1] > 32 else net.input_size
    table = net.flops(size)
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


def test_window_larger_than_input_is_a_config_error():
    with pytest.raises(ConfigError, match="input_size too small"):
        pool_output_hw((2, 2), kernel=5, stride=1)
    assert pool_output_hw((7, 7), kernel=3, stride=2, padding=1) == (4, 4)
