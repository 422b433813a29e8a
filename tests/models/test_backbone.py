"""The shared Backbone machinery: masks, components, blocks, gradients."""

import functools

import pytest
import torch

from budget_edge.errors import ConfigError, InputError
from budget_edge.models import build_backbone


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build_backbone("resnet20").eval()


@pytest.mark.parametrize(
    "bad",
    [
        torch.ones(3, 9),  # wrong batch size
        torch.ones(4, 8),  # wrong K
        torch.ones(4 * 9),  # flat
        torch.full((4, 9), 2.0),  # not 0/1
        torch.full((4, 9), 0.5),
        torch.full((4, 9), float("nan")),
        torch.full((4, 9), -1, dtype=torch.int64),
    ],
)
def test_bad_mask_raises_input_error(net, bad):
    with pytest.raises(InputError, match="mask"):
        net(torch.randn(4, 3, 32, 32), bad)


def test_mask_must_be_a_tensor(net):
    with pytest.raises(InputError, match="torch.Tensor"):
        net(torch.randn(1, 3, 32, 32), [[1] * 9])


def test_bad_images_raise_input_error(net):
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        net(torch.randn(2, 1, 32, 32))
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        net(torch.randn(3, 32, 32))


def test_mask_dtypes_agree(net, make_mask):
    x = torch.randn(5, 3, 32, 32)
    mask = make_mask(5, net.num_components)
    with torch.no_grad():
        want = net(x, mask)
        torch.testing.assert_close(net(x, mask.bool()), want)
        torch.testing.assert_close(net(x, mask.long()), want)
        torch.testing.assert_close(net(x, mask.to(torch.uint8)), want)


def test_all_ones_mask_equals_unmasked_forward_in_training_mode(net):
    """With every component kept nothing is gathered, so even BN batch stats agree."""
    net.train()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(net(x, torch.ones(4, net.num_components)), net(x))


def test_components_and_block_components(net):
    assert net.num_components == 9
    assert [c.index for c in net.components] == list(range(9))
    assert [c.block for c in net.components] == list(range(9))
    assert net.block_components(4) == [4]
    with pytest.raises(ConfigError, match="block 9"):
        net.block_components(9)
    table = net.flops()
    assert [c.flops for c in net.components] == list(table.components)


def test_block_paths_and_skip(net):
    """forward(x, paths=[]) is skip(x); paths=[0] and None run the block."""
    block = net.blocks[3]  # first block of stage 2: shape-changing shortcut
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(block(x, paths=[]), block.skip(x))
        torch.testing.assert_close(block(x, paths=[0]), block(x))
        assert block.skip(x).shape == (2, 32, 16, 16)
    with pytest.raises(ConfigError, match="paths"):
        block(x, paths=[1])


def test_gradients_flow_through_kept_blocks_only(net):
    net.train()
    x = torch.randn(4, 3, 32, 32)
    mask = torch.ones(4, net.num_components)
    mask[:, 2] = 0  # nobody keeps block 2
    mask[:2, 5] = 0  # half the batch keeps block 5
    net(x, mask).sum().backward()
    assert net.blocks[2].conv1.weight.grad is None
    assert net.blocks[5].conv1.weight.grad.abs().sum() > 0
    assert net.conv1.weight.grad.abs().sum() > 0


def test_flops_table(net):
    table = net.flops()
    k = net.num_components
    assert table.masked([1] * k) == table.total
    assert table.masked([0] * k) == table.base == table.stem + table.head
    assert table.masked([1] + [0] * (k - 1)) == table.base + table.components[0]
    assert table.as_dict()["total"] == table.total
    with pytest.raises(InputError, match="components"):
        table.masked([1, 0])


def test_flops_scale_with_input_size(net):
    small, big = net.flops((3, 16, 16)), net.flops((3, 32, 32))
    assert big.stem == 4 * small.stem
    assert big.head == small.head
    with pytest.raises(ConfigError, match="channels"):
        net.flops((1, 32, 32))
    with pytest.raises(ConfigError, match="input_size"):
        net.flops((3, 32))


@functools.cache
def _export_cases():
    """(label, block, (channels, size), paths), built once for all cases."""
    torch.manual_seed(0)
    cifar_a = build_backbone("resnet20", shortcut="A").eval()
    cifar_b = build_backbone("resnet20", shortcut="B").eval()
    resnext = build_backbone("resnext29", cardinality=2, base_width=4).eval()
    tv = build_backbone("resnet50", input_size=(3, 64, 64)).eval()
    return [
        ("A shortcut block", cifar_a.blocks[3], (16, 32), None),
        ("A shortcut skip", cifar_a.blocks[3], (16, 32), []),
        ("B shortcut block", cifar_b.blocks[6], (32, 16), None),
        ("ResNeXt one path", resnext.blocks[3], (64, 32), [1]),
        ("ResNeXt no path", resnext.blocks[3], (64, 32), []),
        ("torchvision bottleneck", tv.blocks[3], (256, 16), None),
    ]


class _Variant(torch.nn.Module):
    """One exported graph: a block with a fixed list of kept paths."""

    def __init__(self, block, paths):
        super().__init__()
        self.block = block
        self.paths = paths

    def forward(self, x):
        return self.block(x, paths=self.paths)


@pytest.mark.parametrize("case", range(6))
def test_block_variants_export_with_free_batch_size(case):
    """forward(x, paths) / skip(x) export with torch.export (what the ONNX exporter
    uses) with a dynamic batch dimension: no data-dependent python on the way."""
    _, block, (channels, size), paths = _export_cases()[case]
    x = torch.randn(2, channels, size, size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(_Variant(block, paths), (x,), dynamic_shapes=({0: batch},))
    other = torch.randn(5, channels, size, size)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(other), block(other, paths=paths))
