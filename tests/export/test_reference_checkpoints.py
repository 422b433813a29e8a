"""The paper's reference checkpoints, imported with load_checkpoint and exported:
BudgetNet's CIFAR ResNeXt with its budget agent, and BlockDrop's FlatResNet with
its agent. Every graph and the dispatched chain equal the loaded PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from budget_edge.agent.policy import build_agent
from budget_edge.export.exporter import export_checkpoint
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import load_checkpoint
from budget_edge.runtime.manifest import Manifest
from budget_edge.runtime.runtime import BudgetRuntime

from .conftest import (
    blockdrop_file,
    budgetnet_file,
    close,
    fashion_mnist_images,
    random_masks,
    realistic,
    run_graph,
)


def export_reference(tmp_path_factory, exporter, name, writer, backbone, **options):
    torch.manual_seed(0)
    net = realistic(build_backbone(backbone, **options), seed=11)
    agent = realistic(build_agent(net.num_components), seed=12, agent=True)
    folder = tmp_path_factory.mktemp(name)
    loaded = load_checkpoint(writer(folder / "ckpt.t7", net, agent))
    manifest = export_checkpoint(loaded, folder / "art", exporter=exporter)
    return loaded, folder / "art", manifest


@pytest.fixture(scope="module")
def budgetnet(tmp_path_factory, exporter):
    return export_reference(
        tmp_path_factory,
        exporter,
        "budgetnet",
        budgetnet_file,
        "resnext29",
        cardinality=2,
        base_width=2,
        widen_factor=1,
    )


@pytest.fixture(scope="module")
def blockdrop(tmp_path_factory, exporter):
    return export_reference(
        tmp_path_factory, exporter, "blockdrop", blockdrop_file, "resnet20", shortcut="B"
    )


def images(seed: int) -> np.ndarray:
    real = fashion_mnist_images(3, 3, 32)
    rand = np.random.default_rng(seed).standard_normal((3, 3, 32, 32)).astype(np.float32)
    return rand if real is None else np.concatenate([rand, real])


def check_graphs(loaded, root, manifest: Manifest, x: np.ndarray) -> None:
    net = loaded.backbone
    with torch.no_grad():
        h = net.stem(torch.from_numpy(x))
        close(run_graph(root / manifest.graph("stem").file, x)[0], h)
        for b, block in enumerate(net.blocks):
            spec = manifest.blocks[b]
            for variant in spec.variants:
                got = run_graph(root / manifest.graph(variant.graph).file, h.numpy())[0]
                close(got, block(h, variant.paths))
            if spec.skip is not None:
                close(run_graph(root / manifest.graph(spec.skip).file, h.numpy())[0], block.skip(h))
            h = block(h)
        close(run_graph(root / manifest.graph("head").file, h.numpy())[0], net.head(h))
        budget = np.full(len(x), 0.3, np.float32)
        probs, value = run_graph(root / manifest.graph("policy").file, x, budget)
        want = loaded.agent(torch.from_numpy(x), torch.from_numpy(budget))
        close(probs, want[0])
        close(value, want[1])


def check_chain(loaded, root) -> None:
    rt = BudgetRuntime.load(root, backend="onnxruntime", threads=1)
    x = images(3)
    mask = random_masks(len(x), rt.num_components, seed=4)
    with torch.no_grad():
        want = loaded.backbone(torch.from_numpy(x), torch.from_numpy(mask))
    close(rt.infer(x, mask=mask).logits, want)


@pytest.mark.slow
def test_budgetnet_resnext_graphs_equal_pytorch(budgetnet):
    loaded, root, manifest = budgetnet
    assert loaded.format == "budgetnet"
    assert all(b.variant_scheme == "all" and len(b.variants) == 3 for b in manifest.blocks)
    # Every ResNeXt block has a skip graph: ReLU(shortcut(x) + BN(0)) is not the identity.
    assert all(b.skip is not None for b in manifest.blocks)
    check_graphs(loaded, root, manifest, images(1))


@pytest.mark.slow
def test_budgetnet_resnext_chain_equals_masked_forward(budgetnet):
    loaded, root, _ = budgetnet
    check_chain(loaded, root)


def test_blockdrop_graphs_equal_pytorch(blockdrop):
    loaded, root, manifest = blockdrop
    assert loaded.format == "blockdrop"
    assert loaded.backbone.config["shortcut"] == "B"
    check_graphs(loaded, root, manifest, images(2))


def test_blockdrop_chain_equals_masked_forward(blockdrop):
    loaded, root, _ = blockdrop
    check_chain(loaded, root)
