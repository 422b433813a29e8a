"""Export of a CIFAR ResNet (option-A shortcuts) with its agent: every graph, the
chain under random masks, hot-policy graphs, the manifest, and checksums."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from budget_edge.agent.masks import masks_over_budgets
from budget_edge.errors import ManifestError
from budget_edge.export.exporter import export_checkpoint
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import LoadedCheckpoint
from budget_edge.runtime.manifest import Manifest, verify_files
from budget_edge.runtime.runtime import BudgetRuntime

from .conftest import META, close, fashion_mnist_images, random_masks, realistic, run_graph


def test_export_leaves_the_model_unchanged(art):
    after = art["net"].state_dict()
    assert after.keys() == art["before"].keys()
    for key, value in art["before"].items():
        assert torch.equal(after[key], value), key


def test_export_keeps_the_callers_training_mode(tmp_path, exporter):
    net = realistic(build_backbone("resnet20"), seed=3).train()
    export_checkpoint(LoadedCheckpoint(net, None, META, "budget-edge"), tmp_path, exporter=exporter)
    assert net.training
    assert all(m.training for m in net.modules())


def inputs(seed: int) -> list[np.ndarray]:
    """Random images, and real Fashion-MNIST images when the dataset is installed."""
    rand = np.random.default_rng(seed).standard_normal((5, 3, 32, 32)).astype(np.float32)
    real = fashion_mnist_images(5, 3, 32)
    return [rand] if real is None else [rand, real]


@pytest.mark.parametrize("seed", [0, 1])
def test_every_graph_equals_pytorch(art, seed):
    net, agent, root, m = art["net"], art["agent"], art["dir"], art["manifest"]
    for images in inputs(seed):
        x = torch.from_numpy(images)
        with torch.no_grad():
            h = net.stem(x)
            close(run_graph(root / m.graph("stem").file, images)[0], h)
            for b, block in enumerate(net.blocks):
                spec = m.blocks[b]
                (variant,) = spec.variants
                close(run_graph(root / m.graph(variant.graph).file, h.numpy())[0], block(h))
                if spec.skip is not None:
                    close(run_graph(root / m.graph(spec.skip).file, h.numpy())[0], block.skip(h))
                h = block(h)
            close(run_graph(root / m.graph("head").file, h.numpy())[0], net.head(h))
            close(run_graph(root / m.graph("full").file, images)[0], net(x))
            budget = np.linspace(0.1, 1.0, len(images)).astype(np.float32)
            probs, value = run_graph(root / m.graph("policy").file, images, budget)
            want_probs, want_value = agent(x, torch.from_numpy(budget))
            close(probs, want_probs)
            close(value, want_value)
            for hot in m.hot_policies:
                mask = torch.tensor([hot.mask] * len(images), dtype=torch.float32)
                close(run_graph(root / m.graph(hot.graph).file, images)[0], net(x, mask))


def test_chain_with_random_masks_equals_masked_forward(art):
    rt = BudgetRuntime.load(art["dir"], backend="onnxruntime", threads=1)
    images = np.random.default_rng(5).standard_normal((8, 3, 32, 32)).astype(np.float32)
    mask = random_masks(8, rt.num_components, seed=6)
    result = rt.infer(images, mask=mask)
    with torch.no_grad():
        want = art["net"](torch.from_numpy(images), torch.from_numpy(mask))
    close(result.logits, want)


def test_graphs_are_clean_with_a_dynamic_batch(art):
    root, m = art["dir"], art["manifest"]
    for spec in m.graphs:
        model = onnx.load(root / spec.file)
        onnx.checker.check_model(model, full_check=True)
        assert "BatchNormalization" not in {n.op_type for n in model.graph.node}, spec.name
        assert spec.inputs[0].shape[0] == "batch"
        assert spec.outputs[0].shape[0] == "batch"
    for n in (1, 7):
        images = np.random.default_rng(n).standard_normal((n, 3, 32, 32)).astype(np.float32)
        assert run_graph(root / m.graph("full").file, images)[0].shape == (n, 10)


def test_manifest_records_flops_shapes_preprocessing_and_versions(art):
    net, agent, m = art["net"], art["agent"], Manifest.load(art["dir"])
    table = net.flops()
    assert m.backbone == "resnet20"
    assert m.backbone_config == net.config
    assert m.flops.stem == table.stem
    assert m.flops.head == table.head
    assert m.flops.policy == agent.flops((3, 32, 32))
    assert [c.flops for c in m.components] == list(table.components)
    assert m.full_flops == table.total
    assert m.class_names == META["class_names"]
    assert m.preprocessing.mean == [0.5, 0.4, 0.3]
    assert m.preprocessing.channels == 3
    assert m.versions["torch"] == torch.__version__
    assert m.versions["onnx"] == onnx.__version__
    assert m.versions["opset"] == 18
    # Only the two blocks whose option-A shortcut changes the shape need a skip graph.
    assert [b.skip for b in m.blocks if b.skip] == ["block003_skip", "block006_skip"]
    assert all(b.variant_scheme == "single" for b in m.blocks)
    assert m.graph("policy").inputs[1].shape == ["batch"]
    assert set(m.files) == {g.file for g in m.graphs}


def test_hot_policies_are_the_most_frequent_masks(art):
    m = art["manifest"]
    masks = masks_over_budgets(art["agent"], art["calib"])
    counts = Counter(tuple(int(v) for v in row) for row in masks)
    counts.pop((1,) * m.num_components, None)  # all kept: the static `full` graph runs it
    top = sorted(counts.values(), reverse=True)[:2]
    assert [counts[tuple(h.mask)] for h in m.hot_policies] == top
    assert [h.graph for h in m.hot_policies] == ["hot00", "hot01"]


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "edit"])
def test_damaged_files_are_named_by_their_checksum(art, tmp_path, damage):
    root = tmp_path / "copy"
    shutil.copytree(art["dir"], root)
    target = root / "graphs" / "block004.onnx"
    data = bytearray(target.read_bytes())
    if damage == "corrupt":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        # A well-formed graph, just not the one that was exported.
        data = bytearray((root / "graphs" / "block005.onnx").read_bytes())
    target.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="graphs/block004.onnx"):
        verify_files(root)
    with pytest.raises(ManifestError, match="graphs/block004.onnx"):
        BudgetRuntime.load(root, backend="onnxruntime")
