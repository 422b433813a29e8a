"""The folded modules that become graphs equal the blocks they come from, and a
ResNeXt variant holds only its kept paths' weights."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from budget_edge.errors import ConfigError
from budget_edge.export.graph_modules import (
    ResNeXtSkip,
    ResNeXtVariant,
    block_module,
    head_module,
    is_identity_skip,
    stem_module,
)
from budget_edge.models import build_backbone

from .conftest import realistic


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def resnext():
    torch.manual_seed(0)
    return realistic(build_backbone("resnext29", cardinality=4, base_width=2, widen_factor=1))


@torch.no_grad()
def test_every_resnext_path_subset_equals_the_block(resnext):
    x = resnext.stem(torch.randn(3, 3, 32, 32))
    for b in (0, 3, 4):  # identity shortcut, conv shortcut (stride 2), identity again
        block = resnext.blocks[b]
        h = x
        for earlier in resnext.blocks[:b]:
            h = earlier(h)
        for size in range(5):
            for paths in itertools.combinations(range(4), size):
                close(block_module(block, list(paths))(h), block(h, list(paths)))


@torch.no_grad()
def test_a_variant_holds_only_its_kept_paths(resnext):
    block = resnext.blocks[3]
    per_path = sum(c.weight.numel() for c in block.path[0].convs())
    for paths in ([0], [1, 3], [0, 1, 2, 3]):
        variant = ResNeXtVariant(block, paths)
        convs = [variant.reduce, variant.grouped, variant.expand]
        assert sum(c.weight.numel() for c in convs) == len(paths) * per_path
        assert variant.grouped.groups == len(paths)
    # All paths dropped: only the shortcut's 1x1 conv is left.
    convs = [m for m in ResNeXtSkip(block).modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1)]


@torch.no_grad()
def test_resnet_blocks_stem_head_fold_batchnorm():
    net = realistic(build_backbone("resnet20"), seed=4)
    x = torch.randn(2, 3, 32, 32)
    stem = stem_module(net)
    close(stem(x), net.stem(x))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in stem.modules())
    h = net.stem(x)
    for block in net.blocks:
        folded = block_module(block, [0])
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        close(folded(h), block(h))
        close(block_module(block, [])(h), block.skip(h))
        h = block(h)
    close(head_module(net)(h), net.head(h))


@torch.no_grad()
def test_identity_skip_is_detected_only_where_the_shape_is_kept():
    net = build_backbone("resnet20").eval()
    h = net.stem(torch.randn(2, 3, 32, 32))
    flags = []
    for block in net.blocks:
        flags.append(is_identity_skip(block, h))
        h = block(h)
    assert flags == [True, True, True, False, True, True, False, True, True]
    resnext = build_backbone("resnext29", cardinality=2, base_width=2, widen_factor=1).eval()
    assert not is_identity_skip(resnext.blocks[1], resnext.stem(torch.randn(1, 3, 32, 32)))


def test_bad_path_sets_are_config_errors(resnext):
    with pytest.raises(ConfigError, match="distinct indices"):
        block_module(resnext.blocks[0], [0, 0])
    with pytest.raises(ConfigError, match="distinct indices"):
        block_module(resnext.blocks[0], [4])
