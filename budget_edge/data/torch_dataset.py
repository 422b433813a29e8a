"""Torch view of ImageArrays: normalised float32 NCHW batches and augmentation.

Augmentation runs on whole uint8 batches (a single `gather` does the random
crops and flips of the whole batch) instead of per-sample Python transforms,
which would dominate the step time on a 2-core machine. The dataset
implements `__getitems__`, so a DataLoader hands it the batch's indices in one
call; `batch_collate` then passes the ready batch through.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler
from torch.utils.data.distributed import DistributedSampler

from budget_edge.data.arrays import DatasetInfo, ImageArrays
from budget_edge.data.registry import load_arrays
from budget_edge.errors import DataError

if TYPE_CHECKING:  # only its attributes are read; models imports data, not back
    from budget_edge.models.backbone import Backbone

Batch = tuple[torch.Tensor, torch.Tensor]


def crop_padding(height: int, width: int) -> int:
    """Zero padding of the random crop: 4 px at 32x32 (CIFAR), 2 px below (28x28)."""
    return 4 if min(height, width) >= 32 else 2


def crop_and_flip(images: torch.Tensor, padding: int, flip: bool = True) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip of a uint8
    (N, C, H, W) batch, every image with its own offset and coin.

    Both become one `gather` over the flattened padded images: for image n the
    output pixel (i, j) reads padded pixel (dy + i, dx + j), or (dy + i,
    dx + W - 1 - j) when flipped. (Advanced indexing with four broadcast index
    tensors does the same about 100x slower.)
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    padded_w = w + 2 * padding
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1))
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1))
    cols = torch.arange(w).view(1, 1, w).expand(n, 1, w)
    if flip:
        mirrored = torch.rand(n) < 0.5
        cols = torch.where(mirrored.view(n, 1, 1), w - 1 - cols, cols)
    offsets = (dy + torch.arange(h).view(1, h, 1)) * padded_w + dx + cols  # (N, H, W)
    flat = padded.reshape(n, c, -1)
    index = offsets.reshape(n, 1, h * w).expand(n, c, h * w)
    return torch.gather(flat, 2, index).view(n, c, h, w)


class ImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """ImageArrays as float32 (C, H, W) tensors normalised by (x/255 - mean)/std.

    `train=True` adds random crops with zero padding and horizontal flips.
    The random draws use torch's global generator, so saving and restoring
    `torch.get_rng_state()` reproduces them (what --resume relies on).
    """

    def __init__(
        self,
        arrays: ImageArrays,
        train: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        padding: int | None = None,
    ) -> None:
        # One NCHW uint8 copy up front: batches are then plain index gathers.
        self.images = torch.from_numpy(arrays.images).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(arrays.labels)
        self.info = arrays.info
        self.train = train
        channels, height, width = arrays.info.input_size
        mean_t = torch.tensor(mean if mean is not None else arrays.info.mean, dtype=torch.float32)
        std_t = torch.tensor(std if std is not None else arrays.info.std, dtype=torch.float32)
        # (x/255 - mean)/std folded into one multiply-add per pixel.
        self.scale = (1.0 / (255.0 * std_t)).view(1, channels, 1, 1)
        self.shift = (-mean_t / std_t).view(1, channels, 1, 1)
        self.padding = crop_padding(height, width) if padding is None else padding

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        if self.train:
            images = crop_and_flip(images, self.padding)
        return images.float() * self.scale + self.shift, self.labels[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]


def batch_collate(batch: Any) -> Batch:
    """The dataset already returns a whole (images, labels) batch; nothing to stack."""
    images, labels = batch
    return images, labels


class ShardSampler(Sampler[int]):
    """Every world_size-th index from `rank`, in order, without padding.

    For evaluation under DDP: the ranks see disjoint shards that together
    cover the test set exactly once (DistributedSampler would repeat samples
    to even out the shards and skew the accuracy).
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def batch_loader(
    dataset: ImageDataset, sampler: Sampler[int], batch_size: int, workers: int, pin_memory: bool
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=batch_collate,
        pin_memory=pin_memory,
    )


@dataclass
class Loaders:
    train: DataLoader[tuple[torch.Tensor, torch.Tensor]]
    test: DataLoader[tuple[torch.Tensor, torch.Tensor]]
    info: DatasetInfo


def build_loaders(
    train_arrays: ImageArrays,
    test_arrays: ImageArrays,
    batch_size: int,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    pin_memory: bool = False,
) -> Loaders:
    """Train loader (shuffled, augmented) and test loader over arrays.

    Both normalise with the training set's mean/std. With world_size > 1 the
    train loader shards through a DistributedSampler (call
    `loader.sampler.set_epoch(epoch)` each epoch) and the test loader through
    a ShardSampler. Single-process shuffling draws from torch's global RNG.
    """
    info = train_arrays.info
    train_set = ImageDataset(train_arrays, train=True)
    train_sampler: Sampler[int]
    if world_size > 1:
        train_sampler = DistributedSampler(
            train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
    else:
        train_sampler = RandomSampler(train_set)
    train = batch_loader(train_set, train_sampler, batch_size, workers, pin_memory)
    test = eval_loader(test_arrays, info, batch_size, workers, rank, world_size, pin_memory)
    return Loaders(train, test, info)


def eval_loader(
    arrays: ImageArrays,
    info: DatasetInfo,
    batch_size: int,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """Unaugmented batches in order, normalised with `info` (the training set's statistics).

    Under DDP each rank reads its own shard; together they cover `arrays` once.
    """
    dataset = ImageDataset(arrays, train=False, mean=info.mean, std=info.std)
    sampler = ShardSampler(len(dataset), rank, world_size)
    return batch_loader(dataset, sampler, batch_size, workers, pin_memory)


def make_loaders(
    name: str,
    root: str | Path | None,
    batch_size: int,
    workers: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    pin_memory: bool = False,
) -> Loaders:
    """Read dataset `name` from `root` and build its train/test loaders."""
    train_arrays = load_arrays(name, root, "train").subset(limit_train)
    test_arrays = load_arrays(name, root, "test").subset(limit_test)
    return build_loaders(
        train_arrays, test_arrays, batch_size, workers, rank, world_size, seed, pin_memory
    )


# ---- the checks and tensors training and evaluation share ------------------------


def preprocessing_of(meta: dict[str, Any], info: DatasetInfo) -> tuple[list[float], list[float]]:
    """Mean/std the backbone was trained with (checkpoint meta), else the dataset's own."""
    prep = meta.get("preprocessing") or {}
    return list(prep.get("mean") or info.mean), list(prep.get("std") or info.std)


def check_data_fits(info: DatasetInfo, backbone: Backbone) -> None:
    """The dataset must have the images and classes the backbone was built for."""
    if tuple(info.input_size) != tuple(backbone.input_size):
        raise DataError(
            f"{info.name} images are {tuple(info.input_size)} (C, H, W) but the backbone was "
            f"built for {tuple(backbone.input_size)}; use the dataset it was trained on (--data)"
        )
    if info.num_classes != backbone.num_classes:
        raise DataError(
            f"{info.name} has {info.num_classes} classes but the backbone predicts "
            f"{backbone.num_classes}; use the dataset it was trained on (--data)"
        )


def as_tensors(arrays: ImageArrays, mean: list[float], std: list[float]) -> Batch:
    """All images of a split, normalised, as one (N, C, H, W) float tensor, and the labels."""
    dataset = ImageDataset(arrays, train=False, mean=mean, std=std)
    return dataset.__getitems__(list(range(len(dataset))))
