"""Analytic FLOPs of convolutions and linear layers.

Convention (docs/internals.md): FLOPs = 2 x multiply-accumulates of Conv2d and
Linear layers, exactly what `torch.utils.flop_counter.FlopCounterMode` counts.
BatchNorm, ReLU, pooling and additions cost nothing here. Spatial sizes are
propagated by hand, so a FLOPs table needs no forward pass and no example input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from budget_edge.errors import ConfigError

HW = tuple[int, int]


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def pool_output_hw(
    hw: HW,
    kernel: int | Sequence[int],
    stride: int | Sequence[int],
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> HW:
    """Output height and width of a convolution or pooling window (floor mode)."""
    k, s, p, d = _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)
    out = tuple((hw[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2))
    if out[0] < 1 or out[1] < 1:
        raise ConfigError(
            f"input_size too small: a {k[0]}x{k[1]} window with stride {s[0]} leaves "
            f"nothing of a {hw[0]}x{hw[1]} feature map; use a larger input_size"
        )
    return out[0], out[1]


def conv2d_flops(conv: nn.Conv2d, hw: HW) -> tuple[int, HW]:
    """FLOPs of `conv` on one image of spatial size `hw`, and its output size."""
    if isinstance(conv.padding, str):
        # Not used by any backbone here; refuse rather than guess.
        raise ConfigError(f"conv2d_flops does not support padding={conv.padding!r}")
    out_hw = pool_output_hw(hw, conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    kh, kw = conv.kernel_size
    macs_per_pixel = conv.out_channels * (conv.in_channels // conv.groups) * kh * kw
    return 2 * macs_per_pixel * out_hw[0] * out_hw[1], out_hw


def chain_conv_flops(convs: Sequence[nn.Conv2d], hw: HW) -> tuple[int, HW]:
    """FLOPs of convolutions applied one after the other, and the final size."""
    total = 0
    for conv in convs:
        flops, hw = conv2d_flops(conv, hw)
        total += flops
    return total, hw


def linear_flops(linear: nn.Linear) -> int:
    """FLOPs of `linear` on one feature vector (the bias add is not counted)."""
    return 2 * linear.in_features * linear.out_features


def counted_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs that FlopCounterMode measures while running `fn(*args, **kwargs)`.

    The measured counterpart of the analytic helpers: tests compare the two,
    and it prices modules that have no analytic formula.
    """
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())
