"""Tiny generated data and checkpoints for the BudgetNet training and evaluation tests.

Plain functions (not fixtures) so tests in several folders can share them.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from budget_edge.agent.policy import build_agent
from budget_edge.models import Backbone, build_backbone
from budget_edge.models.checkpoint import save_checkpoint

FMNIST_META = {
    "preprocessing": {"mean": [0.286], "std": [0.353], "input_size": [1, 28, 28], "layout": "NCHW"},
    "dataset": "fashion-mnist",
}


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_tiny_fashion_mnist(folder: Path, n_train: int = 96, n_test: int = 48) -> Path:
    """Fashion-MNIST-format IDX files: class c has a bright bar at rows 2c..2c+3, plus noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n)
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 4 : 2 * c + 8, 4:24] = 220
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def tiny_backbone(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return build_backbone("resnet20", num_classes=10, in_channels=1, input_size=(1, 28, 28))


def write_backbone_checkpoint(path: Path, with_agent: bool = False, seed: int = 0) -> Path:
    """A randomly initialised ResNet-20 for 1x28x28 images (optionally with an agent)."""
    backbone = tiny_backbone(seed)
    agent = None
    if with_agent:
        agent = build_agent(backbone.num_components, "light", 1, (1, 28, 28))
    save_checkpoint(path, backbone, agent, meta=dict(FMNIST_META))
    return path
