"""Calibration images for `--fuse-top` and INT8 engines, numpy only.

`build-engines` runs on the device, where torch may be absent, so this module
reads data with the numpy readers and normalises it with the manifest's
preprocessing, exactly as the runtime does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from budget_edge.data import load_arrays
from budget_edge.data.split import split_from_meta
from budget_edge.errors import DataError

DEFAULT_COUNT = 512


def parse_data_spec(spec: str) -> tuple[str, str | None]:
    """'fashion-mnist' or 'cifar10:/path/to/cifar' -> (name, root or None)."""
    name, _, root = spec.partition(":")
    if not name:
        raise DataError(
            f"--calib-data {spec!r} is empty: give a dataset name, e.g. "
            "fashion-mnist or cifar10:/path/to/cifar-10-python.tar.gz"
        )
    return name, root or None


def normalise(
    images: np.ndarray, mean: Sequence[float], std: Sequence[float], input_size: Sequence[int]
) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W): (pixel / 255 - mean) / std."""
    n, h, w, c = images.shape
    if (c, h, w) != tuple(input_size):
        raise DataError(
            f"calibration images are (C, H, W) = {(c, h, w)} but the model takes "
            f"{tuple(input_size)}: calibrate with data from the training dataset"
        )
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(1, c, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, c, 1, 1)
    return np.ascontiguousarray((x - m) / s)


def calibration_images(
    spec: str,
    mean: Sequence[float],
    std: Sequence[float],
    input_size: Sequence[int],
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    validation_split: dict[str, object] | None = None,
) -> np.ndarray:
    """`count` training images of dataset `spec`, drawn with a fixed seed, normalised.

    With the model's `validation_split` (checkpoint or manifest meta) they are drawn
    from the images it trained on, never from the split later choices are made on.
    """
    if count < 1:
        raise DataError(f"the calibration set needs at least 1 image, got {count}")
    name, root = parse_data_spec(spec)
    arrays = load_arrays(name, root, split="train")
    if validation_split is not None:
        arrays = split_from_meta(arrays, validation_split, f"the model's {name} split")[0]
    if len(arrays) == 0:
        raise DataError(f"dataset {name} has no training images to calibrate with")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(arrays), size=min(count, len(arrays)), replace=False)
    return normalise(arrays.images[np.sort(pick)], mean, std, input_size)
