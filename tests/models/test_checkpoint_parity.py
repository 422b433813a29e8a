"""Imported models give the reference code's outputs.

The modules below mirror the structure, parameter names and per-sample
inference path (``forward_single``) of the reference implementations:
BudgetNet's ``CifarResNeXt`` (type-A paths, anthonychen1251/BudgetNet
models/model.py), BlockDrop's ``FlatResNet32``/``Policy32`` and BudgetNet's
``Policy32BudgetConstraint`` (Tushar-N/blockdrop and BudgetNet
models/resnet.py, base.py) and akamaster's CIFAR ResNet (option-A shortcut).
They are filled with random weights and random BatchNorm statistics (eval
mode), saved in the reference file layouts, loaded with ``load_checkpoint``
and compared with random masks, one image at a time as the reference does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint
from budget_edge.models.checkpoint_formats import BLOCKDROP_AGENT_NOTE, CIFAR_MEAN, CIFAR_STD

M = TypeVar("M", bound=nn.Module)


def close(actual: Tensor, expected: Tensor) -> None:
    """The parity bar: equal to 1e-4."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


# -- BlockDrop FlatResNet32 / Policy32, BudgetNet Policy32BudgetConstraint --------------


class RefBasicBlock(nn.Module):
    """BlockDrop's BasicBlock: returns only the residual branch."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class RefDownsampleB(nn.Module):
    """Average pool by the stride, then the input followed by zero copies."""

    def __init__(self, n_in: int, n_out: int, stride: int) -> None:
        super().__init__()
        self.avg = nn.AvgPool2d(stride)
        self.expand_ratio = n_out // n_in

    def forward(self, x: Tensor) -> Tensor:
        x = self.avg(x)
        return torch.cat([x] + [x.mul(0)] * (self.expand_ratio - 1), 1)


class RefFlatResNet32(nn.Module):
    def __init__(self, layers: list[int], num_classes: int = 10) -> None:
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.avgpool = nn.AvgPool2d(8)
        blocks, shortcuts = [], []
        for planes, count, stride in zip([16, 32, 64], layers, [1, 2, 2], strict=True):
            shortcut: nn.Module = nn.Sequential()
            if stride != 1 or self.inplanes != planes:
                shortcut = RefDownsampleB(self.inplanes, planes, stride)
            stage = [RefBasicBlock(self.inplanes, planes, stride)]
            self.inplanes = planes
            stage += [RefBasicBlock(planes, planes, 1) for _ in range(1, count)]
            blocks.append(nn.ModuleList(stage))
            shortcuts.append(shortcut)
        self.blocks = nn.ModuleList(blocks)
        self.ds = nn.ModuleList(shortcuts)
        self.fc: nn.Module = nn.Linear(64, num_classes)
        self.layer_config = layers

    def seed(self, x: Tensor) -> Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def forward_single(self, x: Tensor, policy: Tensor) -> Tensor:
        x = self.seed(x)
        t = 0
        for segment, num_blocks in enumerate(self.layer_config):
            for b in range(num_blocks):
                residual = self.ds[segment](x) if b == 0 else x
                if policy[t] == 1:
                    block = self.blocks[segment][b]  # type: ignore[index]
                    x = F.relu(residual + block(x))
                else:
                    x = residual
                t += 1
        return self.fc(self.avgpool(x).view(x.size(0), -1))

    def forward_full(self, x: Tensor) -> Tensor:
        return self.forward_single(x, torch.ones(sum(self.layer_config)))


class RefPolicy32(nn.Module):
    """BlockDrop's agent (budget=False) or BudgetNet's (budget=True)."""

    def __init__(self, num_blocks: int, budget: bool) -> None:
        super().__init__()
        self.features = RefFlatResNet32([1, 1, 1])
        self.features.fc = nn.Sequential()
        self.budget = budget
        self.logit = nn.Linear(64 + int(budget), num_blocks)
        self.vnet = nn.Linear(64 + int(budget), 1)

    def forward(self, x: Tensor, budget: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.features.forward_full(x)
        if self.budget:
            assert budget is not None
            x = torch.cat((x, budget.view(x.shape[0], -1)), dim=1)
        return torch.sigmoid(self.logit(x)), self.vnet(x)


# -- BudgetNet CifarResNeXt ------------------------------------------------------------


class RefResNeXtBottleneck(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        cardinality: int,
        base_width: int,
        widen_factor: int,
        block_id: int,
    ) -> None:
        super().__init__()
        width = int(base_width * out_channels / (widen_factor * 16.0))
        self.block_policy_idx = [block_id * cardinality, (block_id + 1) * cardinality]
        self.path = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    [
                        ("conv_reduce", nn.Conv2d(in_channels, width, 1, 1, 0, bias=False)),
                        ("bn_reduce", nn.BatchNorm2d(width)),
                        ("relu_reduce", nn.ReLU()),
                        ("conv_conv", nn.Conv2d(width, width, 3, stride, 1, bias=False)),
                        ("bn", nn.BatchNorm2d(width)),
                        ("relu_conv", nn.ReLU()),
                        ("conv_expand", nn.Conv2d(width, out_channels, 1, 1, 0, bias=False)),
                    ]
                )
            )
            for _ in range(cardinality)
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if in_channels != out_channels:
            self.shortcut.add_module(
                "shortcut_conv", nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)
            )
            self.shortcut.add_module("shortcut_bn", nn.BatchNorm2d(out_channels))

    def forward_single(self, x: Tensor, policy: Tensor) -> Tensor:
        available = policy[self.block_policy_idx[0] : self.block_policy_idx[1]]
        residual = self.shortcut(x)
        bottleneck = torch.zeros(residual.shape)
        for index, layer in enumerate(self.path):
            if available[index].item() == 1:
                bottleneck += layer(x)
        return F.relu(residual + self.bn(bottleneck))


class RefCifarResNeXt(nn.Module):
    def __init__(
        self, cardinality: int, depth: int, nlabels: int, base_width: int, widen_factor: int = 4
    ) -> None:
        super().__init__()
        self.block_depth = (depth - 2) // 9
        self.stage_policy_num = [self.block_depth * cardinality * (i + 1) for i in range(2)]
        self.stages = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv_1_3x3 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(16)
        args = (cardinality, base_width, widen_factor)
        self.stage_1 = self.block(self.stages[0], self.stages[1], 1, *args)
        self.stage_2 = self.block(self.stages[1], self.stages[2], 2, *args)
        self.stage_3 = self.block(self.stages[2], self.stages[3], 2, *args)
        self.classifier = nn.Linear(self.stages[3], nlabels)

    def block(
        self, in_ch: int, out_ch: int, stride: int, cardinality: int, base_width: int, widen: int
    ) -> nn.ModuleList:
        return nn.ModuleList(
            RefResNeXtBottleneck(
                in_ch if i == 0 else out_ch,
                out_ch,
                stride if i == 0 else 1,
                cardinality,
                base_width,
                widen,
                i,
            )
            for i in range(self.block_depth)
        )

    def forward_single(self, x: Tensor, policy: Tensor) -> Tensor:
        x = F.relu(self.bn_1(self.conv_1_3x3(x)))
        first, second = self.stage_policy_num
        for block in self.stage_1:
            x = block.forward_single(x, policy[0:first])  # type: ignore[operator]
        for block in self.stage_2:
            x = block.forward_single(x, policy[first:second])  # type: ignore[operator]
        for block in self.stage_3:
            x = block.forward_single(x, policy[second:])  # type: ignore[operator]
        x = F.avg_pool2d(x, 8, 1)
        return self.classifier(x.view(-1, self.stages[3]))


# -- akamaster CIFAR ResNet -------------------------------------------------------------


class RefAkamasterBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or in_planes != planes else None

    def shortcut(self, x: Tensor) -> Tensor:
        if self.pad is None:
            return x
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class RefAkamasterResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._layer(16, 16, n, 1)
        self.layer2 = self._layer(16, 32, n, 2)
        self.layer3 = self._layer(32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _layer(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [RefAkamasterBlock(in_planes, planes, stride)]
        blocks += [RefAkamasterBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward_single(self, x: Tensor, policy: Tensor | None = None) -> Tensor:
        """akamaster's forward; a dropped block (policy 0) passes only its shortcut."""
        out = F.relu(self.bn1(self.conv1(x)))
        t = 0
        for layer in (self.layer1, self.layer2, self.layer3):
            for block in layer:
                keep = policy is None or policy[t] == 1
                out = block(out) if keep else block.shortcut(out)  # type: ignore[operator]
                t += 1
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


# -- helpers ----------------------------------------------------------------------------


def randomized(module: M, randomize_bn: Callable[..., None], seed: int) -> M:
    """Random weights (small enough to keep activations moderate), random BN stats, eval."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, (1.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1)
    randomize_bn(module, seed=seed)
    return module.eval()


def per_sample(reference: Callable[[Tensor, Tensor], Tensor], x: Tensor, mask: Tensor) -> Tensor:
    """The reference's inference: one image at a time with its own policy vector."""
    with torch.no_grad():
        return torch.cat([reference(x[i : i + 1], mask[i]) for i in range(len(x))])


def save(path: Path, obj: dict) -> Path:
    torch.save(obj, path)
    return path


# -- BudgetNet ResNeXt ------------------------------------------------------------------


def test_budgetnet_resnext_and_agent_match_the_reference(
    tmp_path: Path, randomize_bn: Callable[..., None], make_mask: Callable[..., Tensor]
) -> None:
    rnet = randomized(RefCifarResNeXt(2, 29, 10, base_width=4), randomize_bn, 1)
    agent = randomized(RefPolicy32(9 * 2, budget=True), randomize_bn, 2)
    path = save(
        tmp_path / "ckpt_E_5.t7",
        {"resnet": rnet.state_dict(), "agent": agent.state_dict(), "epoch": 5},
    )

    loaded = load_checkpoint(path)
    assert loaded.format == "budgetnet"
    assert loaded.backbone.config["name"] == "resnext29"
    assert loaded.backbone.config["cardinality"] == 2
    assert loaded.backbone.config["base_width"] == 4
    assert loaded.backbone.num_components == 18

    x = torch.randn(8, 3, 32, 32)
    mask = make_mask(8, 18, seed=3)
    with torch.no_grad():
        ours = loaded.backbone(x, mask)
    close(ours, per_sample(rnet.forward_single, x, mask))

    budget = torch.rand(8)
    assert loaded.agent is not None
    with torch.no_grad():
        probs, value = loaded.agent(x, budget)
        ref_probs, ref_value = agent(x, budget)
    close(probs, ref_probs)
    close(value, ref_value.squeeze(1))

    assert loaded.meta["preprocessing"]["mean"] == CIFAR_MEAN
    assert loaded.meta["preprocessing"]["std"] == CIFAR_STD
    assert loaded.meta["source"] == {"format": "budgetnet", "epoch": 5}
    assert loaded.meta["dataset"] == "cifar10"


def test_budgetnet_resnet_variant_with_budget_agent(
    tmp_path: Path, randomize_bn: Callable[..., None], make_mask: Callable[..., Tensor]
) -> None:
    rnet = randomized(RefFlatResNet32([3, 3, 3], num_classes=100), randomize_bn, 4)
    agent = randomized(RefPolicy32(9, budget=True), randomize_bn, 5)
    path = save(tmp_path / "r20.t7", {"resnet": rnet.state_dict(), "agent": agent.state_dict()})

    loaded = load_checkpoint(path)
    assert loaded.format == "budgetnet"
    assert loaded.backbone.config["name"] == "resnet20"
    assert loaded.backbone.config["shortcut"] == "B"
    x = torch.randn(6, 3, 32, 32)
    mask = make_mask(6, 9, seed=6)
    with torch.no_grad():
        ours = loaded.backbone(x, mask)
    close(ours, per_sample(rnet.forward_single, x, mask))
    assert loaded.meta["dataset"] == "cifar100"


# -- BlockDrop ---------------------------------------------------------------------------


def test_blockdrop_resnet32_and_agent_match_the_reference(
    tmp_path: Path, randomize_bn: Callable[..., None], make_mask: Callable[..., Tensor]
) -> None:
    rnet = randomized(RefFlatResNet32([5, 5, 5]), randomize_bn, 7)
    agent = randomized(RefPolicy32(15, budget=False), randomize_bn, 8)
    path = save(
        tmp_path / "ckpt.t7",
        {
            "resnet": rnet.state_dict(),
            "agent": agent.state_dict(),
            "epoch": 10,
            "reward": torch.tensor(0.5),
            "acc": torch.tensor(0.25),
        },
    )

    loaded = load_checkpoint(path)
    assert loaded.format == "blockdrop"
    assert loaded.backbone.config == {
        "name": "resnet32",
        "num_classes": 10,
        "in_channels": 3,
        "input_size": [3, 32, 32],
        "shortcut": "B",
    }
    x = torch.randn(6, 3, 32, 32)
    mask = make_mask(6, 15, seed=9)
    with torch.no_grad():
        ours = loaded.backbone(x, mask)
    close(ours, per_sample(rnet.forward_single, x, mask))

    assert loaded.agent is not None
    with torch.no_grad():
        ref_probs, ref_value = agent(x)
        for budget in (0.1, 0.9):
            probs, value = loaded.agent(x, budget)
            close(probs, ref_probs)
            close(value, ref_value.squeeze(1))
    assert BLOCKDROP_AGENT_NOTE in loaded.meta["warnings"]
    # BlockDrop normalises its ResNet-32 CIFAR-10 model with the CIFAR statistics.
    assert loaded.meta["preprocessing"]["mean"] == CIFAR_MEAN
    assert loaded.meta["source"] == {"format": "blockdrop", "epoch": 10, "reward": 0.5, "acc": 0.25}

    # Re-saved in our format, the import keeps its outputs and meta.
    resaved = load_checkpoint(
        save_checkpoint(tmp_path / "ours.pt", loaded.backbone, loaded.agent, loaded.meta)
    )
    assert resaved.format == "budget-edge"
    assert resaved.meta == loaded.meta
    assert resaved.agent is not None
    with torch.no_grad():
        assert torch.equal(resaved.backbone(x, mask), ours)
        assert torch.equal(resaved.agent(x, 0.3)[0], loaded.agent(x, 0.3)[0])


def test_blockdrop_legacy_agent_file_and_unnormalised_model(
    tmp_path: Path, randomize_bn: Callable[..., None]
) -> None:
    rnet = randomized(RefFlatResNet32([3, 3, 3], num_classes=10), randomize_bn, 10)
    agent = randomized(RefPolicy32(9, budget=False), randomize_bn, 11)
    legacy = dict(agent.state_dict())
    # Old BlockDrop files keep the agent under 'net' with the extractor's classifier.
    legacy["features.fc.weight"] = torch.zeros(10, 64)
    legacy["features.fc.bias"] = torch.zeros(10)
    path = save(tmp_path / "old.t7", {"resnet": rnet.state_dict(), "net": legacy})

    loaded = load_checkpoint(path, format="blockdrop")
    assert loaded.agent is not None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        close(loaded.agent(x, 0.5)[0], agent(x)[0])
    assert loaded.meta["preprocessing"]["mean"] == [0.0, 0.0, 0.0]
    assert any("unnormalised" in w for w in loaded.meta["warnings"])


def test_resnet_without_agent_reads_as_blockdrop_or_budgetnet_on_request(
    tmp_path: Path, randomize_bn: Callable[..., None]
) -> None:
    rnet = randomized(RefFlatResNet32([3, 3, 3]), randomize_bn, 12)
    path = save(tmp_path / "r.t7", {"resnet": rnet.state_dict()})
    assert load_checkpoint(path).format == "blockdrop"
    as_budgetnet = load_checkpoint(path, format="budgetnet")
    assert as_budgetnet.agent is None
    assert as_budgetnet.meta["preprocessing"]["mean"] == CIFAR_MEAN


def test_agents_of_the_wrong_kind_are_named(
    tmp_path: Path, randomize_bn: Callable[..., None]
) -> None:
    rnet = randomized(RefFlatResNet32([3, 3, 3]), randomize_bn, 13)
    blockdrop_agent = RefPolicy32(9, budget=False).state_dict()
    budget_agent = RefPolicy32(9, budget=True).state_dict()
    path = save(tmp_path / "bd.t7", {"resnet": rnet.state_dict(), "agent": blockdrop_agent})
    with pytest.raises(Exception, match="takes no budget input .*BlockDrop"):
        load_checkpoint(path, format="budgetnet")
    path = save(tmp_path / "bn.t7", {"resnet": rnet.state_dict(), "agent": budget_agent})
    with pytest.raises(Exception, match="takes a budget input .*BudgetNet.*like 'budgetnet'"):
        load_checkpoint(path, format="blockdrop")


def test_agent_for_another_backbone_is_refused(
    tmp_path: Path, randomize_bn: Callable[..., None]
) -> None:
    rnet = randomized(RefFlatResNet32([3, 3, 3]), randomize_bn, 14)
    agent = RefPolicy32(15, budget=True).state_dict()
    path = save(tmp_path / "mixed.t7", {"resnet": rnet.state_dict(), "agent": agent})
    with pytest.raises(Exception, match="agent decides 15 components but the backbone has 9"):
        load_checkpoint(path)


# -- akamaster --------------------------------------------------------------------------


def akamaster_file(reference: nn.Module, best_prec1: float) -> dict:
    """akamaster's layout: DataParallel 'module.' keys, no num_batches_tracked."""
    state = {
        f"module.{k}": v
        for k, v in reference.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    return {"best_prec1": best_prec1, "state_dict": state}


def test_akamaster_layout_matches_the_reference(
    tmp_path: Path, randomize_bn: Callable[..., None], make_mask: Callable[..., Tensor]
) -> None:
    reference = randomized(RefAkamasterResNet(20), randomize_bn, 15)
    path = save(tmp_path / "resnet20.th", akamaster_file(reference, 91.5))

    loaded = load_checkpoint(path)
    assert loaded.format == "akamaster"
    assert loaded.backbone.config["name"] == "resnet20"
    assert loaded.backbone.config["shortcut"] == "A"
    x = torch.randn(6, 3, 32, 32)
    mask = make_mask(6, 9, seed=16)
    with torch.no_grad():
        close(loaded.backbone(x), reference.forward_single(x))
        ours = loaded.backbone(x, mask)
    close(ours, per_sample(reference.forward_single, x, mask))
    assert loaded.meta["preprocessing"] == {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "input_size": [3, 32, 32],
        "layout": "NCHW",
    }
    assert loaded.meta["source"] == {"format": "akamaster", "best_prec1": 91.5}


def shared_dir() -> Path:
    import os

    env = os.environ.get("BUDGET_EDGE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared"


AKAMASTER_DIR = shared_dir() / "pretrained" / "akamaster-cifar10"


@pytest.mark.skipif(not AKAMASTER_DIR.is_dir(), reason="pretrained akamaster weights absent")
@pytest.mark.parametrize(
    ("depth", "file"), [(20, "resnet20-12fca82f.th"), (56, "resnet56-4bfd9763.th")]
)
def test_real_akamaster_weights(depth: int, file: str) -> None:
    path = AKAMASTER_DIR / file
    loaded = load_checkpoint(path)
    assert loaded.format == "akamaster"
    assert loaded.backbone.config["name"] == f"resnet{depth}"

    raw = torch.load(path, map_location="cpu", weights_only=True)
    reference = RefAkamasterResNet(depth).eval()
    state = {k.removeprefix("module."): v for k, v in raw["state_dict"].items()}
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert unexpected == []
    assert all(k.endswith("num_batches_tracked") for k in missing)

    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        ours = loaded.backbone(x)
        close(ours, reference.forward_single(x))
    # A trained model responds to its input: logits vary across images, and the
    # images do not all land in one class.
    assert float(ours.std(dim=0).mean()) > 0.1
    assert len(set(ours.argmax(1).tolist())) >= 2
    assert loaded.meta["source"]["best_prec1"] > 90
