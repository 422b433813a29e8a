"""The validation split: images carved from the training set before any training.

Every choice a run makes (best epoch, hyperparameters, masks, thresholds) is
made on these images, and the test set only reports. The split depends on the
training set and `size` alone (a fixed seed, stratified by class), so every
model trained with the same `--val-size` on the same data holds out the same
images and their validation numbers compare. Torch-free: the runtime's bench
reads it too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from budget_edge.data.arrays import ImageArrays
from budget_edge.errors import DataError

# Not a training seed: the split must not move when a run changes its --seed.
SPLIT_SEED = 20200207


@dataclass(frozen=True)
class ValidationSplit:
    """Which training images were held out: enough to rebuild and verify the split."""

    size: int
    seed: int
    digest: str  # sha256 of the held-out indices (int64, ascending)
    content: str = ""  # sha256 of the held-out images and labels

    def as_meta(self) -> dict[str, object]:
        return {
            "size": self.size,
            "seed": self.seed,
            "indices_sha256": self.digest,
            "content_sha256": self.content,
        }


def validation_indices(labels: np.ndarray, size: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """Ascending indices of `size` images, drawn per class in proportion to its share."""
    n = labels.shape[0]
    if not 0 < size < n:
        raise DataError(
            f"--val-size must be between 1 and {n - 1} (the training set has {n} images), "
            f"got {size}"
        )
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder rounding: the per-class quotas sum to exactly `size`.
    exact = counts * size / n
    quota = np.floor(exact).astype(np.int64)
    short = size - int(quota.sum())
    quota[np.argsort(exact - quota, kind="stable")[::-1][:short]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[:q]
        for label, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def indices_digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


def content_digest(arrays: ImageArrays) -> str:
    """The indices depend on the labels alone; this also sees the pixels."""
    digest = hashlib.sha256(np.ascontiguousarray(arrays.images).tobytes())
    digest.update(np.ascontiguousarray(arrays.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def split_validation(
    train: ImageArrays, size: int, seed: int = SPLIT_SEED
) -> tuple[ImageArrays, ImageArrays, ValidationSplit]:
    """(what is left to train on, the validation images, the record of the split)."""
    held = validation_indices(train.labels, size, seed)
    keep = np.ones(len(train), dtype=bool)
    keep[held] = False
    rest = ImageArrays(train.images[keep], train.labels[keep], train.info)
    val = ImageArrays(train.images[held], train.labels[held], train.info)
    record = ValidationSplit(size, seed, indices_digest(held), content_digest(val))
    return rest, val, record


def split_from_meta(
    train: ImageArrays, meta: dict[str, object] | None, source: str
) -> tuple[ImageArrays, ImageArrays, ValidationSplit]:
    """The split a checkpoint recorded, rebuilt on `train` and checked against its digest.

    A checkpoint trained before validation splits existed has none: the
    DataError says so rather than letting a later choice fall back to data the
    backbone trained on.
    """
    if not isinstance(meta, dict) or "size" not in meta:
        raise DataError(
            f"{source} records no validation split (it was trained before --val-size "
            "existed); retrain it with `budget-edge pretrain --val-size N` so that choices "
            "are made on images it never trained on"
        )
    size, seed = meta.get("size"), meta.get("seed", SPLIT_SEED)
    if not isinstance(size, int) or not isinstance(seed, int):
        raise DataError(f"{source}: the validation split's size and seed must be integers")
    rest, val, split = split_validation(train, size, seed)
    content = meta.get("content_sha256")  # runs started before it was recorded have none
    if split.digest != meta.get("indices_sha256") or (content and content != split.content):
        raise DataError(
            f"{source} was trained on another training set: its validation split of "
            f"{size} images does not match this data's; pass the dataset it was trained on"
        )
    return rest, val, split


def arranged_for_choices(
    train: ImageArrays, meta: dict[str, object] | None, source: str, limit: int | None = None
) -> tuple[ImageArrays, int]:
    """The training images with the checkpoint's validation split moved last, and its size.

    Every step after pretraining takes "the last N training images" for its
    choices (the agent's prior, the allocator's calibration, mask searches) and
    trains on the rest; arranged this way, those are the validation images the
    backbone never trained on. A checkpoint from before the split: (train, 0),
    and the steps fall back to their old tail of the training set. `limit`
    keeps the first `limit` images to train on (all of the validation split).
    """
    split = meta.get("validation_split") if isinstance(meta, dict) else None
    if split is None:
        return train.subset(limit), 0
    rest, val, _ = split_from_meta(train, split if isinstance(split, dict) else {}, source)
    rest = rest.subset(limit)
    images = np.concatenate([rest.images, val.images])
    labels = np.concatenate([rest.labels, val.labels])
    return ImageArrays(images, labels, train.info), len(val)
