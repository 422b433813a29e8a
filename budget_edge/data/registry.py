"""Dataset names -> readers (torch-free, Python 3.10)."""

from __future__ import annotations

from pathlib import Path

from budget_edge.data.arrays import ImageArrays
from budget_edge.data.cifar import load_cifar
from budget_edge.data.fashion_mnist import load_fashion_mnist
from budget_edge.data.folder import load_folder
from budget_edge.errors import DataError

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "folder")
SPLITS = ("train", "test")


def list_datasets() -> list[str]:
    return list(DATASETS)


def load_arrays(name: str, root: str | Path | None = None, split: str = "train") -> ImageArrays:
    """Load split `split` of dataset `name` from `root` (None: the dataset's default place)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if name == "fashion-mnist":
        return load_fashion_mnist(root, split)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, split)
    if name == "folder":
        return load_folder(root, split)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
