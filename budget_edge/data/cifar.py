"""CIFAR-10 and CIFAR-100 from the official python archives (torch-free, Python 3.10).

The root is `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz`, the folder it
extracts to (`cifar-10-batches-py` / `cifar-100-python`), or a folder holding
either. Nothing is downloaded. The batches are pickles, read with
`safe_pickle` so that a tampered file cannot run code.
"""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from budget_edge.data.arrays import DatasetInfo, ImageArrays
from budget_edge.data.safe_pickle import safe_loads
from budget_edge.errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and which keys it uses."""

    name: str
    archive: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: bytes
    labels_key: bytes
    num_classes: int
    # Per-channel statistics of the 50000 training images on [0, 1] RGB, as
    # published with the dataset's common training recipes.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR10 = CifarLayout(
    name="cifar10",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    names_key=b"label_names",
    labels_key=b"labels",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)

CIFAR100 = CifarLayout(
    name="cifar100",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    names_key=b"fine_label_names",
    labels_key=b"fine_labels",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)

LAYOUTS = {"cifar10": CIFAR10, "cifar100": CIFAR100}


def how_to_get(layout: CifarLayout) -> str:
    return (
        f"download {layout.archive} (the python version) from "
        "https://www.cs.toronto.edu/~kriz/cifar.html and pass --data-dir to the "
        "archive or the folder it extracts to"
    )


def read_members(layout: CifarLayout, root: Path, names: list[str]) -> dict[str, bytes]:
    """Return the raw bytes of the named batch files, from an archive or a folder."""
    source = locate(layout, root)
    if source.is_dir():
        found = {}
        for name in names:
            path = source / name
            if not path.is_file():
                raise DataError(f"{layout.name}: {path} is missing; {how_to_get(layout)}")
            found[name] = path.read_bytes()
        return found
    return read_from_archive(layout, source, names)


def locate(layout: CifarLayout, root: Path) -> Path:
    """Find the extracted batch folder or the archive under `root`."""
    candidates = [root, root / layout.folder, root / layout.archive]
    for path in candidates:
        if path.is_dir() and (path / layout.meta_file).is_file():
            return path
        if path.is_file():
            return path
    raise DataError(
        f"{layout.name}: no {layout.archive} or {layout.folder}/ with {layout.meta_file} "
        f"at {root}; {how_to_get(layout)}"
    )


def read_from_archive(layout: CifarLayout, archive: Path, names: list[str]) -> dict[str, bytes]:
    """Read the named members of `<folder>/` from the .tar.gz in one pass."""
    wanted = {f"{layout.folder}/{name}": name for name in names}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                key = member.name.removeprefix("./")
                if key in wanted and member.isfile():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[wanted[key]] = handle.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"{archive} is not a readable .tar.gz ({exc}); the download is truncated "
            f"or corrupt: {how_to_get(layout)}"
        ) from None
    missing = [f"{layout.folder}/{name}" for name in names if name not in found]
    if missing:
        raise DataError(
            f"{archive} lacks {', '.join(missing)}; it is not {layout.archive}: "
            f"{how_to_get(layout)}"
        )
    return found


def parse_batch(layout: CifarLayout, name: str, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode one batch into uint8 (N, 32, 32, 3) images and int64 labels."""
    batch = safe_loads(raw, f"{layout.name} batch {name}")
    data = field(layout, name, batch, b"data")
    labels_raw = field(layout, name, batch, layout.labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{layout.name} batch {name}: 'data' is not a uint8 (N, 3072) array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{layout.name} batch {name}: rows have {data.shape[1]} values, not 3072")
    try:
        labels = np.asarray(labels_raw, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{layout.name} batch {name}: labels are not integers") from None
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"{layout.name} batch {name}: {data.shape[0]} images but {labels.size} labels"
        )
    # Rows are channel-major (1024 red, then green, then blue values).
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def field(layout: CifarLayout, name: str, batch: Any, key: bytes) -> Any:
    if not isinstance(batch, dict) or key not in batch:
        raise DataError(
            f"{layout.name} file {name} has no {key.decode()!r} entry; it is not an "
            f"official CIFAR batch: {how_to_get(layout)}"
        )
    return batch[key]


def parse_names(layout: CifarLayout, raw: bytes) -> tuple[str, ...]:
    meta = safe_loads(raw, f"{layout.name} {layout.meta_file}")
    names = field(layout, layout.meta_file, meta, layout.names_key)
    if not isinstance(names, list) or len(names) != layout.num_classes:
        raise DataError(
            f"{layout.name} {layout.meta_file}: expected {layout.num_classes} class names"
        )
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def load_cifar(name: str, root: str | Path | None, split: str = "train") -> ImageArrays:
    """Load a CIFAR-10 or CIFAR-100 split (fine labels) as uint8 (N, 32, 32, 3)."""
    layout = LAYOUTS[name]
    if root is None:
        raise DataError(f"{name} needs a data location; {how_to_get(layout)}")
    files = list(layout.train_files if split == "train" else layout.test_files)
    raw = read_members(layout, Path(root), [layout.meta_file, *files])
    class_names = parse_names(layout, raw[layout.meta_file])
    parts = [parse_batch(layout, f, raw.pop(f)) for f in files]
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    labels = np.concatenate([p[1] for p in parts])
    info = DatasetInfo(
        name=name,
        num_classes=layout.num_classes,
        class_names=class_names,
        mean=layout.mean,
        std=layout.std,
        input_size=(3, 32, 32),
    )
    return ImageArrays(images, labels, info)
