"""Shared helpers for the backbone tests."""

from collections.abc import Callable

import pytest
import torch
from torch import nn


def randomize_batchnorm(net: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters.

    Fresh BatchNorms are identities in eval mode, which would hide mistakes such
    as skipping the block BN on an all-dropped ResNeXt block.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                assert m.running_mean is not None
                assert m.running_var is not None
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)


def random_mask(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Random 0/1 mask whose first row drops everything and second keeps everything."""
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, k, generator=gen) < 0.5).float()
    mask[0] = 0
    mask[1] = 1
    return mask


@pytest.fixture
def randomize_bn() -> Callable[..., None]:
    return randomize_batchnorm


@pytest.fixture
def make_mask() -> Callable[..., torch.Tensor]:
    return random_mask
