"""Fixtures with generated data in the official on-disk formats."""

from pathlib import Path

import pytest

from .formats import write_fashion_mnist


@pytest.fixture
def fmnist_dir(tmp_path: Path) -> Path:
    return write_fashion_mnist(tmp_path / "fmnist")
