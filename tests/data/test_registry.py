import subprocess
import sys
from pathlib import Path

import pytest

from budget_edge.data import list_datasets, load_arrays
from budget_edge.errors import DataError


def test_names():
    assert list_datasets() == ["fashion-mnist", "cifar10", "cifar100", "folder"]


def test_dispatch_by_name(fmnist_dir: Path):
    assert load_arrays("fashion-mnist", fmnist_dir, "test").images.shape == (10, 28, 28, 1)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'mnist'; choose one of fashion-mnist"):
        load_arrays("mnist")


def test_unknown_split(fmnist_dir: Path):
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_arrays("fashion-mnist", fmnist_dir, "val")


def test_readers_do_not_import_torch(fmnist_dir: Path):
    # The runtime reads data through here on devices without torch.
    code = (
        "import sys; from budget_edge.data import load_arrays; "
        f"load_arrays('fashion-mnist', {str(fmnist_dir)!r}); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
