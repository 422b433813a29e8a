"""Generated datasets in the official on-disk formats, tiny but real in structure."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(folder: Path, n_train: int = 20, n_test: int = 10) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def py2_style_pickle(obj: object) -> bytes:
    """Pickle like the official CIFAR files: bytes keys, and arrays naming
    numpy.core.multiarray._reconstruct (what numpy 1 wrote). Protocol 3 writes
    globals as text lines, so the module name can be swapped in place."""
    data = pickle.dumps(obj, protocol=3)
    return data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(n: int, num_classes: int, labels_key: bytes, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"generated batch",
        labels_key: [int(i % num_classes) for i in range(n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def cifar_files(variant: str) -> dict[str, bytes]:
    """Relative path -> contents of a tiny CIFAR-10 or CIFAR-100 python release."""
    if variant == "cifar10":
        files = {
            f"cifar-10-batches-py/data_batch_{i}": py2_style_pickle(
                cifar_batch(4, 10, b"labels", i)
            )
            for i in range(1, 6)
        }
        files["cifar-10-batches-py/test_batch"] = py2_style_pickle(cifar_batch(6, 10, b"labels", 9))
        meta = {
            b"label_names": [f"class{i}".encode() for i in range(10)],
            b"num_cases_per_batch": 4,
            b"num_vis": 3072,
        }
        files["cifar-10-batches-py/batches.meta"] = py2_style_pickle(meta)
        return files
    train = cifar_batch(12, 100, b"fine_labels", 1)
    train[b"coarse_labels"] = [0] * 12
    test = cifar_batch(5, 100, b"fine_labels", 2)
    test[b"coarse_labels"] = [0] * 5
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    return {
        "cifar-100-python/train": py2_style_pickle(train),
        "cifar-100-python/test": py2_style_pickle(test),
        "cifar-100-python/meta": py2_style_pickle(meta),
    }


def write_cifar_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_cifar_dir(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root
