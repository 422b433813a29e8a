"""CIFAR ResNeXt: reference channel arithmetic and names, path-level masks."""

import pytest
import torch
import torch.nn.functional as F

from budget_edge.errors import ConfigError
from budget_edge.models import build_backbone
from budget_edge.models.resnext import CifarResNeXt, ResNeXtBlock, ResNeXtPath


def reference_block(blk: ResNeXtBlock, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The reference forward_single: zeros, add each kept path, BN, + shortcut, ReLU."""
    if len(blk.shortcut) == 2:
        residual = blk.shortcut[1](blk.shortcut[0](x))  # shortcut_conv, shortcut_bn
    else:
        residual = x
    bottleneck = torch.zeros(residual.shape)
    for j, path in enumerate(blk.path):
        assert isinstance(path, ResNeXtPath)
        if keep[j] == 1:
            h = F.relu(path.bn_reduce(path.conv_reduce(x)))
            h = F.relu(path.bn(path.conv_conv(h)))
            bottleneck = bottleneck + path.conv_expand(h)
    return F.relu(residual + blk.bn(bottleneck))


def reference_forward(net: CifarResNeXt, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    rows = []
    c = net.cardinality
    for i in range(x.shape[0]):
        h = F.relu(net.bn_1(net.conv_1_3x3(x[i : i + 1])))
        b = 0
        for stage in (net.stage_1, net.stage_2, net.stage_3):
            for blk in stage:
                assert isinstance(blk, ResNeXtBlock)
                h = reference_block(blk, h, mask[i, b * c : (b + 1) * c])
                b += 1
        rows.append(net.classifier(F.avg_pool2d(h, 8).flatten(1)))
    return torch.cat(rows)


@pytest.fixture(scope="module")
def small_net():
    """ResNeXt-11 (one block per stage), 3x4d: cheap but has every block kind."""
    torch.manual_seed(0)
    return CifarResNeXt(depth=11, cardinality=3, base_width=4).eval()


def test_masked_forward_matches_per_sample_reference(small_net, randomize_bn, make_mask):
    randomize_bn(small_net)
    x = torch.randn(6, 3, 32, 32)
    mask = make_mask(6, small_net.num_components, seed=2)
    mask[2, :3] = 0  # a sample that drops every path of one block, keeps others
    mask[3, 3:6] = 1
    with torch.no_grad():
        torch.testing.assert_close(
            small_net(x, mask), reference_forward(small_net, x, mask), atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            small_net(x),
            reference_forward(small_net, x, torch.ones_like(mask)),
            atol=1e-5,
            rtol=1e-5,
        )


def test_block_paths_and_skip(small_net, randomize_bn):
    """paths=[...] leaves the others out of the sum; [] is ReLU(shortcut + BN(0))."""
    randomize_bn(small_net)
    blk = small_net.blocks[1]  # stride 2, conv shortcut
    assert isinstance(blk, ResNeXtBlock)
    x = torch.randn(2, blk.path[0].conv_reduce.in_channels, 32, 32)
    with torch.no_grad():
        for paths in ([], [1], [0, 2], [0, 1, 2]):
            keep = torch.tensor([1 if p in paths else 0 for p in range(3)])
            torch.testing.assert_close(
                blk(x, paths=paths), reference_block(blk, x, keep), atol=1e-5, rtol=1e-5
            )
        torch.testing.assert_close(blk.skip(x), blk(x, paths=[]))
        # BN(0) is not zero once BN has statistics: the all-dropped output is not
        # just ReLU(shortcut).
        short = blk.shortcut(x)
        assert not torch.allclose(blk.skip(x), F.relu(short))
    with pytest.raises(ConfigError, match="paths"):
        blk(x, paths=[3])
    with pytest.raises(ConfigError, match="paths"):
        blk(x, paths=[1, 1])


def test_path_gradients(small_net):
    small_net.train()
    x = torch.randn(4, 3, 32, 32)
    mask = torch.ones(4, small_net.num_components)
    mask[:, 4] = 0  # nobody keeps block 1 path 1
    mask[:2, 5] = 0  # half keep block 1 path 2
    small_net.zero_grad()
    small_net(x, mask).sum().backward()
    blk = small_net.blocks[1]
    assert isinstance(blk, ResNeXtBlock)
    assert blk.path[1].conv_reduce.weight.grad is None
    assert blk.path[2].conv_reduce.weight.grad.abs().sum() > 0
    assert blk.bn.weight.grad.abs().sum() > 0
    small_net.eval()


@pytest.mark.parametrize(
    ("name", "blocks", "params"),
    [("resnext29", 9, 1_129_780), ("resnext56", 18, 2_234_548)],
)
def test_paper_table_1(name, blocks, params):
    """Table 1 (CIFAR-100): 9/18 blocks, C = 4 gives 36/72 paths, 1.13M/2.23M params."""
    net = build_backbone(name, num_classes=100)
    assert len(net.blocks) == blocks
    assert net.num_components == 4 * blocks
    assert sum(p.numel() for p in net.parameters()) == params
    assert round(params / 1e6, 2) == {"resnext29": 1.13, "resnext56": 2.23}[name]
    comps = net.components
    assert [(c.block, c.path) for c in comps[:5]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert net.block_components(2) == [8, 9, 10, 11]
    assert comps[-1].stage == 2


def test_reference_channel_arithmetic():
    net = build_backbone("resnext29")
    # Paths of width 16/32/64 into blocks of 64/128/256 channels.
    for stage, (width, out) in zip(
        (net.stage_1, net.stage_2, net.stage_3), ((16, 64), (32, 128), (64, 256)), strict=True
    ):
        blk = stage[0]
        assert blk.path[0].conv_conv.weight.shape == (width, width, 3, 3)
        assert blk.path[0].conv_expand.weight.shape == (out, width, 1, 1)
    assert net.conv_1_3x3.weight.shape == (16, 3, 3, 3)
    assert net.classifier.weight.shape == (10, 256)


def test_reference_key_names():
    keys = set(build_backbone("resnext29").state_dict())
    for key in [
        "conv_1_3x3.weight",
        "bn_1.running_var",
        "stage_1.0.path.0.conv_reduce.weight",
        "stage_1.0.path.3.bn_reduce.running_mean",
        "stage_2.2.path.1.conv_conv.weight",
        "stage_3.1.path.2.bn.weight",
        "stage_3.2.path.3.conv_expand.weight",
        "stage_1.0.bn.running_mean",
        "stage_1.0.shortcut.shortcut_conv.weight",
        "stage_2.0.shortcut.shortcut_bn.running_var",
        "classifier.weight",
        "classifier.bias",
    ]:
        assert key in keys, key
    # Only the first block of a stage changes shape, so only it has a shortcut conv.
    assert "stage_1.1.shortcut.shortcut_conv.weight" not in keys


def test_options_and_round_trip():
    net = build_backbone("resnext29", num_classes=100, cardinality=8, base_width=8)
    assert net.num_components == 72
    assert net.config == {
        "name": "resnext29",
        "num_classes": 100,
        "in_channels": 3,
        "input_size": [3, 32, 32],
        "cardinality": 8,
        "base_width": 8,
        "widen_factor": 4,
    }
    build_backbone(**net.config).load_state_dict(net.state_dict(), strict=True)


def test_bad_options():
    with pytest.raises(ConfigError, match="cardinality"):
        build_backbone("resnext29", cardinality=0)
    with pytest.raises(ConfigError, match="9n"):
        CifarResNeXt(depth=30)
    with pytest.raises(ConfigError, match="base_width"):
        build_backbone("resnext29", base_width=-2)
