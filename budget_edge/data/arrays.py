"""In-memory image datasets as plain numpy arrays (torch-free, Python 3.10)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from budget_edge.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset: classes and preprocessing.

    `mean` and `std` are per channel, on pixel values scaled to [0, 1];
    `input_size` is (C, H, W).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]


@dataclass(frozen=True)
class ImageArrays:
    """A split of a dataset: `images` uint8 (N, H, W, C), `labels` int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray
    info: DatasetInfo

    def __post_init__(self) -> None:
        # Everything downstream (torch dataset, runtime bench) relies on these.
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"{self.info.name}: images must be uint8 (N, H, W, C), got "
                f"{self.images.dtype} {self.images.shape}; convert the data first"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.info.name}: labels must be int64 of shape ({self.images.shape[0]},), "
                f"got {self.labels.dtype} {self.labels.shape}"
            )
        n, h, w, c = self.images.shape
        if (c, h, w) != tuple(self.info.input_size):
            raise DataError(
                f"{self.info.name}: images are (C, H, W) = {(c, h, w)} but the dataset "
                f"info says {tuple(self.info.input_size)}"
            )
        if n and (self.labels.min() < 0 or self.labels.max() >= self.info.num_classes):
            raise DataError(
                f"{self.info.name}: labels must lie in [0, {self.info.num_classes - 1}], "
                f"got [{self.labels.min()}, {self.labels.max()}]; the files may be corrupt"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, limit: int | None) -> ImageArrays:
        """The first `limit` samples (all of them when `limit` is None)."""
        if limit is None or limit >= len(self):
            return self
        if limit < 1:
            raise DataError(f"a dataset limit must be at least 1, got {limit}")
        return ImageArrays(self.images[:limit], self.labels[:limit], self.info)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, H, W, C) images scaled to [0, 1].

    Accumulates per image chunk in float64 so that a large dataset needs no
    full float copy.
    """
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for start in range(0, images.shape[0], 4096):
        chunk = images[start : start + 4096].reshape(-1, channels).astype(np.float64) / 255.0
        total += chunk.sum(axis=0)
        total_sq += (chunk * chunk).sum(axis=0)
        count += chunk.shape[0]
    if count == 0:
        raise DataError("cannot compute image statistics of an empty dataset")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    # A constant channel would divide by zero when normalising.
    std = np.where(std > 0, std, 1.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
