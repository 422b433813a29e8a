"""Fashion-MNIST from its IDX `.gz` files (torch-free, Python 3.10).

Debian ships them in the `dataset-fashion-mnist` package under
/usr/share/datasets/fashion-mnist.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from budget_edge.data.arrays import DatasetInfo, ImageArrays
from budget_edge.errors import DataError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Computed once over the 60000 training images scaled to [0, 1]
# (0.28604, 0.35302); tests/data/test_fashion_mnist.py checks them again.
MEAN = (0.2860,)
STD = (0.3530,)

INFO = DatasetInfo(
    name="fashion-mnist",
    num_classes=10,
    class_names=CLASS_NAMES,
    mean=MEAN,
    std=STD,
    input_size=(1, 28, 28),
)

# The official files hold 60000 and 10000 samples; smaller files in the same
# format (a subset) are accepted as long as images and labels agree.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

HOW_TO_GET = (
    "install it with 'sudo apt-get install dataset-fashion-mnist' or pass --data-dir "
    "to a folder with the four IDX .gz files (train-images-idx3-ubyte.gz, ...)"
)

# IDX magic numbers: two zero bytes, type code 0x08 (unsigned byte), number of dims.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one gzip-compressed IDX file of unsigned bytes into an array."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise DataError(f"Fashion-MNIST file {path} not found; {HOW_TO_GET}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc}); {HOW_TO_GET}") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is too short for an IDX header; the file is corrupt")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path} has IDX magic number {found:#010x}, expected {magic:#010x}; "
            "it is not the right Fashion-MNIST file"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(
            f"{path}: header says {dims} ({expected} bytes) but holds {len(data) - header} "
            "bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(root: str | Path | None = None, split: str = "train") -> ImageArrays:
    """Load a Fashion-MNIST split as uint8 (N, 28, 28, 1) images and int64 labels."""
    folder = Path(root) if root is not None else DEFAULT_ROOT
    if not folder.is_dir():
        raise DataError(f"Fashion-MNIST folder {folder} does not exist; {HOW_TO_GET}")
    images_name, labels_name = FILES[split]
    images = read_idx(folder / images_name, IMAGES_MAGIC)
    labels = read_idx(folder / labels_name, LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{folder / images_name}: images are {images.shape[1:]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Fashion-MNIST {split} in {folder}: {images.shape[0]} images but "
            f"{labels.shape[0]} labels; the files do not belong together; {HOW_TO_GET}"
        )
    if labels.max() >= INFO.num_classes:
        raise DataError(f"{folder / labels_name}: label {labels.max()} out of range 0..9")
    return ImageArrays(images[..., None].copy(), labels.astype(np.int64), INFO)
