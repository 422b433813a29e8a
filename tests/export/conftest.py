"""Shared pieces for the export tests: realistic tiny models, reference-layout files,
one GraphExporter for the whole session (so exports of similar models share traces),
and the ONNX Runtime helpers the parity checks use."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from budget_edge.agent.policy import build_agent
from budget_edge.export.exporter import export_checkpoint
from budget_edge.export.onnx_export import GraphExporter
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import LoadedCheckpoint

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def realistic(net: nn.Module, seed: int = 0, batches: int = 2, agent: bool = False) -> nn.Module:
    """Random BN affine parameters and running statistics measured on random input.

    Fresh BatchNorms are identities in eval mode and would hide folding
    mistakes; measured statistics keep activations O(1) so 1e-4 is a real bar.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.2)
            bn.momentum = None  # cumulative average over the batches below
        net.train()
        size = getattr(net, "input_size", (3, 32, 32))
        for _ in range(batches):
            x = torch.randn(8, *size, generator=gen)
            if agent:
                net(x, torch.rand(8, generator=gen))
            else:
                net(x)
        for bn in bns:
            bn.momentum = 0.1
    return net.eval()


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_graph(path: Path, *inputs: np.ndarray) -> list[np.ndarray]:
    s = session(path)
    feeds = {
        i.name: np.ascontiguousarray(x, np.float32)
        for i, x in zip(s.get_inputs(), inputs, strict=True)
    }
    return s.run(None, feeds)


def close(actual: np.ndarray, expected: torch.Tensor | np.ndarray) -> None:
    """The parity bar: fp32 equal to 1e-4."""
    want = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    np.testing.assert_allclose(actual, want, rtol=1e-4, atol=1e-4)


def fashion_mnist_images(n: int, channels: int, size: int) -> np.ndarray | None:
    """Real test images (zero-padded to `size`, repeated to `channels`), or None when absent."""
    path = FMNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if not path.is_file():
        return None
    with gzip.open(path, "rb") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    x = raw.astype(np.float32) / 255.0
    pad = (size - 28) // 2
    x = np.pad(x, ((0, 0), (pad, size - 28 - pad), (pad, size - 28 - pad)))
    x = (x - 0.286) / 0.353
    return np.ascontiguousarray(np.repeat(x[:, None], channels, axis=1))


def random_masks(n: int, k: int, seed: int) -> np.ndarray:
    """0/1 masks; row 0 drops everything, row 1 keeps everything."""
    mask = (np.random.default_rng(seed).random((n, k)) < 0.5).astype(np.float32)
    mask[0] = 0
    mask[1] = 1
    return mask


@pytest.fixture(scope="session")
def exporter() -> GraphExporter:
    return GraphExporter()


CLASSES = [f"c{i}" for i in range(10)]
META = {
    "preprocessing": {
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3],
        "input_size": [3, 32, 32],
        "layout": "NCHW",
    },
    "class_names": CLASSES,
}


@pytest.fixture(scope="session")
def art(tmp_path_factory, exporter):
    """resnet20 (option A) with its agent and two hot policies, exported once per session."""
    torch.manual_seed(0)
    net = realistic(build_backbone("resnet20", shortcut="A"), seed=1)
    agent = realistic(build_agent(net.num_components), seed=2, agent=True)
    # Hand over training-mode modules: a known trap is an exporter that flips them
    # to eval (or runs them in train mode) and so updates the running statistics.
    net.train()
    agent.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calib = np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(np.float32)
    out = tmp_path_factory.mktemp("resnet20")
    manifest = export_checkpoint(
        LoadedCheckpoint(net, agent, META, "budget-edge"),
        out,
        fuse_top=2,
        calib_data=calib,
        exporter=exporter,
    )
    net.eval()
    agent.eval()
    return {
        "net": net,
        "agent": agent,
        "dir": out,
        "manifest": manifest,
        "before": before,
        "calib": calib,
    }


def budgetnet_file(path: Path, net: nn.Module, agent: nn.Module) -> Path:
    """A BudgetNet reference checkpoint: our ResNeXt and agent keys are the reference's."""
    torch.save({"resnet": net.state_dict(), "agent": agent.state_dict(), "epoch": 3}, path)
    return path


def blockdrop_file(path: Path, net: nn.Module, agent: nn.Module) -> Path:
    """A BlockDrop checkpoint: FlatResNet32 keys and a budget-free Policy32 agent."""
    resnet = {}
    for key, value in net.state_dict().items():
        if key.startswith("layer"):
            stage, rest = key[len("layer") :].split(".", 1)
            key = f"blocks.{int(stage) - 1}.{rest}"
        elif key.startswith("linear."):
            key = "fc." + key[len("linear.") :]
        resnet[key] = value
    policy = dict(agent.state_dict())
    for head in ("logit", "vnet"):
        policy[f"{head}.weight"] = policy[f"{head}.weight"][:, :64].clone()  # no budget input
    torch.save({"resnet": resnet, "agent": policy, "epoch": 7}, path)
    return path
