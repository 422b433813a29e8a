import numpy as np
import pytest
import torch

from budget_edge.data.arrays import DatasetInfo, ImageArrays
from budget_edge.data.torch_dataset import (
    ImageDataset,
    ShardSampler,
    build_loaders,
    crop_and_flip,
    crop_padding,
    make_loaders,
)


def toy(n: int = 10, size: int = 8, channels: int = 3) -> ImageArrays:
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (n, size, size, channels), dtype=np.uint8)
    info = DatasetInfo(
        "toy",
        4,
        ("a", "b", "c", "d"),
        (0.5,) * channels,
        (0.25,) * channels,
        (channels, size, size),
    )
    return ImageArrays(images, np.arange(n, dtype=np.int64) % 4, info)


def test_normalisation_without_augmentation():
    data = toy()
    dataset = ImageDataset(data, train=False)
    x, y = dataset.__getitems__([3, 1])
    assert x.dtype == torch.float32
    assert x.shape == (2, 3, 8, 8)
    expected = (data.images[[3, 1]].transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert y.tolist() == [3, 1]
    one_x, one_y = dataset[3]
    torch.testing.assert_close(one_x, x[0])
    assert int(one_y) == 3


def test_explicit_mean_std_override_the_info():
    dataset = ImageDataset(toy(), mean=[0.0] * 3, std=[1.0] * 3)
    x, _ = dataset.__getitems__([0])
    assert float(x.max()) <= 1.0
    assert float(x.min()) > 0.0


def test_padding_follows_the_image_size():
    assert crop_padding(32, 32) == 4
    assert crop_padding(28, 28) == 2


def reference_crop_flip(image: np.ndarray, dy: int, dx: int, flip: bool, pad: int) -> np.ndarray:
    c, h, w = image.shape
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)))
    out = padded[:, dy : dy + h, dx : dx + w]
    return out[:, :, ::-1] if flip else out


def test_every_augmented_image_is_a_padded_crop_possibly_mirrored():
    torch.manual_seed(0)
    images = torch.randint(1, 256, (64, 2, 6, 7), dtype=torch.uint8)
    out = crop_and_flip(images, padding=2).numpy()
    seen_flip, seen_shift = False, False
    for n in range(64):
        matches = [
            (dy, dx, flip)
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
            if np.array_equal(out[n], reference_crop_flip(images[n].numpy(), dy, dx, flip, 2))
        ]
        assert matches, f"image {n} is not a crop of its padded original"
        seen_flip |= any(flip for _, _, flip in matches)
        seen_shift |= any((dy, dx) != (2, 2) for dy, dx, _ in matches)
    assert seen_flip
    assert seen_shift


def test_augmentation_is_reproducible_from_the_torch_rng_state():
    dataset = ImageDataset(toy(), train=True)
    state = torch.get_rng_state()
    first, _ = dataset.__getitems__(list(range(10)))
    torch.set_rng_state(state)
    second, _ = dataset.__getitems__(list(range(10)))
    torch.testing.assert_close(first, second)
    third, _ = dataset.__getitems__(list(range(10)))
    assert not torch.equal(first, third)


def test_shard_sampler_covers_everything_once():
    shards = [list(ShardSampler(10, rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))
    assert [len(ShardSampler(10, rank, 3)) for rank in range(3)] == [4, 3, 3]


def test_loaders_batch_and_shuffle():
    torch.manual_seed(1)
    loaders = build_loaders(toy(10), toy(5), batch_size=4)
    batches = list(loaders.train)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(toy(10).labels.tolist())
    test_labels = torch.cat([y for _, y in loaders.test]).tolist()
    assert test_labels == toy(5).labels.tolist()  # in order, unshuffled
    assert loaders.info.name == "toy"


def test_distributed_loaders_split_the_data():
    seen = []
    for rank in range(2):
        loaders = build_loaders(toy(10), toy(5), batch_size=3, rank=rank, world_size=2)
        loaders.train.sampler.set_epoch(0)  # type: ignore[attr-defined]
        seen.append(sum(len(y) for _, y in loaders.train))
        assert sum(len(y) for _, y in loaders.test) == (3 if rank == 0 else 2)
    assert seen == [5, 5]


def test_workers_deliver_the_same_batches_shape():
    loaders = build_loaders(toy(10), toy(5), batch_size=4, workers=1)
    shapes = [tuple(x.shape) for x, _ in loaders.train]
    assert shapes == [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]


def test_make_loaders_reads_by_name_with_limits(fmnist_dir):
    loaders = make_loaders("fashion-mnist", fmnist_dir, batch_size=8, limit_train=12, limit_test=3)
    assert len(loaders.train.dataset) == 12  # type: ignore[arg-type]
    assert len(loaders.test.dataset) == 3  # type: ignore[arg-type]
    x, _ = next(iter(loaders.train))
    assert x.shape == (8, 1, 28, 28)


@pytest.mark.parametrize("size", [28, 32])
def test_augmented_batch_keeps_shape(size: int):
    dataset = ImageDataset(toy(4, size=size, channels=1), train=True)
    x, _ = dataset.__getitems__([0, 1, 2, 3])
    assert x.shape == (4, 1, size, size)
