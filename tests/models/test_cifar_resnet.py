"""CIFAR ResNets: architecture, shortcut options, mask semantics, akamaster keys."""

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from budget_edge.errors import ConfigError
from budget_edge.models import build_backbone
from budget_edge.models.cifar_resnet import BasicBlock, CifarResNet


def reference_shortcut(x: torch.Tensor, planes: int, option: str) -> torch.Tensor:
    """The two published parameter-free shortcuts, written out independently."""
    if x.shape[1] == planes:
        return x
    if option == "A":  # akamaster LambdaLayer
        sub = x[:, :, ::2, ::2]
        zeros = torch.zeros(sub.shape[0], planes // 4, sub.shape[2], sub.shape[3])
        return torch.cat([zeros, sub, zeros], dim=1)
    pooled = F.avg_pool2d(x, 2)  # BlockDrop DownsampleB
    zeros = torch.zeros(pooled.shape[0], planes - x.shape[1], pooled.shape[2], pooled.shape[3])
    return torch.cat([pooled, zeros], dim=1)


def reference_forward(net: CifarResNet, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One image at a time with python ifs, like the reference forward_single."""
    rows = []
    for i in range(x.shape[0]):
        h = F.relu(net.bn1(net.conv1(x[i : i + 1])))
        k = 0
        for layer in (net.layer1, net.layer2, net.layer3):
            for blk in layer:
                assert isinstance(blk, BasicBlock)
                short = reference_shortcut(h, blk.conv1.out_channels, net.shortcut_option)
                if mask[i, k] == 1:
                    branch = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(h)))))
                    h = F.relu(branch + short)
                else:
                    h = short
                k += 1
        rows.append(net.linear(h.mean(dim=(2, 3))))
    return torch.cat(rows)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_masked_forward_matches_per_sample_reference(shortcut, randomize_bn, make_mask):
    torch.manual_seed(0)
    net = build_backbone("resnet20", shortcut=shortcut).eval()
    randomize_bn(net)
    x = torch.randn(6, 3, 32, 32)
    mask = make_mask(6, net.num_components, seed=1)
    with torch.no_grad():
        got = net(x, mask)
        want = reference_forward(net, x, mask)
        full = net(x)
        full_ref = reference_forward(net, x, torch.ones_like(mask))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full, full_ref, atol=1e-5, rtol=1e-5)


def test_shortcut_options_differ():
    """A and B place the input channels differently, so their outputs differ."""
    a = build_backbone("resnet20", shortcut="A").eval()
    b = build_backbone("resnet20", shortcut="B").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))


@pytest.mark.parametrize(
    ("name", "blocks", "params"),
    [
        ("resnet20", 9, 269_722),
        ("resnet32", 15, 464_154),
        ("resnet56", 27, 853_018),
        ("resnet110", 54, 1_727_962),
    ],
)
def test_depths(name, blocks, params):
    """Block and parameter counts of the published CIFAR-10 models (0.27M ... 1.7M)."""
    net = build_backbone(name)
    assert net.num_components == blocks == len(net.blocks)
    assert sum(p.numel() for p in net.parameters()) == params
    assert [c.stage for c in net.components] == [s for s in range(3) for _ in range(blocks // 3)]
    assert all(c.path is None for c in net.components)


def test_bad_options():
    with pytest.raises(ConfigError, match="shortcut"):
        build_backbone("resnet20", shortcut="C")
    with pytest.raises(ConfigError, match="6n"):
        CifarResNet(depth=21)
    with pytest.raises(ConfigError, match="num_classes"):
        build_backbone("resnet20", num_classes=0)


def test_grayscale_input():
    net = build_backbone("resnet20", in_channels=1, input_size=(1, 28, 28))
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert net.flops().input_size == (1, 28, 28)


def _pretrained_dir() -> Path:
    shared = os.environ.get("BUDGET_EDGE_SHARED")
    root = Path(shared) if shared else Path(__file__).resolve().parents[2] / ".." / "shared"
    return root / "pretrained" / "akamaster-cifar10"


@pytest.mark.parametrize("depth", [20, 56])
def test_akamaster_weights_fit(depth):
    """The real akamaster weights have exactly our parameter names and shapes."""
    files = sorted(_pretrained_dir().glob(f"resnet{depth}-*.th"))
    if not files:
        pytest.skip("akamaster pretrained weights not found")
    state = torch.load(files[0], map_location="cpu", weights_only=True)["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = build_backbone(f"resnet{depth}")
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert unexpected == []
    assert all(k.endswith("num_batches_tracked") for k in missing)
