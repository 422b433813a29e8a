"""torchvision-layout ResNets: keys, sizes, FLOPs, mask semantics."""

import pytest
import torch
import torch.nn.functional as F

from budget_edge.models import build_backbone
from budget_edge.models.torchvision_resnet import (
    BasicBlock,
    Bottleneck,
    TorchvisionBlock,
    TorchvisionResNet,
)

# Published by torchvision for num_classes=1000: parameters and GFLOPS (which
# torchvision reports as multiply-accumulates at 224x224).
PUBLISHED = {
    "resnet18": (11_689_512, 1.81, 8),
    "resnet34": (21_797_672, 3.66, 16),
    "resnet50": (25_557_032, 4.09, 16),
    "resnet101": (44_549_160, 7.80, 33),
    "resnext50_32x4d": (25_028_904, 4.23, 16),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_matches_torchvision_published_sizes(name):
    params, gmacs, blocks = PUBLISHED[name]
    net = build_backbone(name, num_classes=1000)
    assert sum(p.numel() for p in net.parameters()) == params
    assert round(net.flops().total / 2e9, 2) == gmacs
    assert net.num_components == blocks
    assert net.input_size == (3, 224, 224)
    assert [c.stage for c in net.components][-1] == 3


def test_torchvision_key_names():
    r50 = set(build_backbone("resnet50").state_dict())
    for key in [
        "conv1.weight",
        "bn1.running_mean",
        "bn1.num_batches_tracked",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_var",
        "layer2.0.conv2.weight",
        "layer3.5.bn3.bias",
        "layer4.2.conv3.weight",
        "fc.weight",
        "fc.bias",
    ]:
        assert key in r50, key
    assert "layer1.1.downsample.0.weight" not in r50
    r18 = set(build_backbone("resnet18").state_dict())
    assert "layer1.0.downsample.0.weight" not in r18  # 64 -> 64, stride 1
    assert "layer2.0.downsample.0.weight" in r18
    assert "layer1.0.conv3.weight" not in r18
    rx = build_backbone("resnext50_32x4d").state_dict()
    assert rx["layer1.0.conv2.weight"].shape == (128, 4, 3, 3)  # 32 groups of 4


def test_stride_on_the_3x3():
    """ResNet v1.5: the first bottleneck of a stage strides in conv2, not conv1."""
    net = build_backbone("resnet50")
    blk = net.layer2[0]
    assert isinstance(blk, Bottleneck)
    assert blk.conv1.stride == (1, 1)
    assert blk.conv2.stride == (2, 2)


def test_state_dict_round_trip():
    a = build_backbone("resnet18", num_classes=5)
    b = build_backbone(**a.config)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))
    assert a.config == {
        "name": "resnet18",
        "num_classes": 5,
        "in_channels": 3,
        "input_size": [3, 224, 224],
    }


def reference_block(blk: TorchvisionBlock, h: torch.Tensor, keep: bool) -> torch.Tensor:
    identity = h if blk.downsample is None else blk.downsample[1](blk.downsample[0](h))
    if not keep:
        return identity
    if isinstance(blk, BasicBlock):
        out = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(h)))))
    else:
        assert isinstance(blk, Bottleneck)
        out = F.relu(blk.bn1(blk.conv1(h)))
        out = F.relu(blk.bn2(blk.conv2(out)))
        out = blk.bn3(blk.conv3(out))
    return F.relu(out + identity)


def reference_forward(net: TorchvisionResNet, x: torch.Tensor, mask: torch.Tensor):
    rows = []
    for i in range(x.shape[0]):
        h = F.relu(net.bn1(net.conv1(x[i : i + 1])))
        h = F.max_pool2d(h, 3, 2, 1)
        k = 0
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            for blk in layer:
                assert isinstance(blk, TorchvisionBlock)
                h = reference_block(blk, h, bool(mask[i, k] == 1))
                k += 1
        rows.append(net.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)))
    return torch.cat(rows)


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d"])
def test_masked_forward_matches_per_sample_reference(name, randomize_bn, make_mask):
    torch.manual_seed(0)
    net = build_backbone(name, input_size=(3, 64, 64)).eval()
    randomize_bn(net)
    x = torch.randn(4, 3, 64, 64)
    mask = make_mask(4, net.num_components, seed=3)
    mask[2, 0] = 0  # the first block has a downsample: dropped, it still runs
    with torch.no_grad():
        torch.testing.assert_close(
            net(x, mask), reference_forward(net, x, mask), atol=1e-5, rtol=1e-5
        )
