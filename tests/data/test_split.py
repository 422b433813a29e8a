import numpy as np
import pytest

from budget_edge.data.arrays import DatasetInfo, ImageArrays
from budget_edge.data.split import split_from_meta, split_validation, validation_indices
from budget_edge.errors import DataError

INFO = DatasetInfo("toy", 3, ("a", "b", "c"), (0.5,), (0.5,), (1, 2, 2))


def arrays(n: int, seed: int = 0) -> ImageArrays:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 2, 2, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(3), -(-n // 3))[:n].astype(np.int64)
    return ImageArrays(images, rng.permutation(labels), INFO)


def test_the_split_is_disjoint_complete_and_stratified():
    data = arrays(300)
    rest, val, split = split_validation(data, 30)
    assert len(rest) == 270
    assert len(val) == 30
    assert split.size == 30
    assert np.bincount(val.labels, minlength=3).tolist() == [10, 10, 10]

    def rows(*parts: ImageArrays) -> list[bytes]:
        return sorted(
            image.tobytes() + bytes([label])
            for part in parts
            for image, label in zip(part.images, part.labels, strict=True)
        )

    assert rows(rest, val) == rows(data)


def test_the_split_ignores_everything_but_the_data_and_its_size():
    """Two models with the same --val-size hold out the same images, whatever their seed."""
    data = arrays(300)
    first = validation_indices(data.labels, 30)
    assert np.array_equal(first, validation_indices(data.labels, 30))
    assert not np.array_equal(first, validation_indices(data.labels, 30, seed=1))
    quota = validation_indices(data.labels, 31)
    assert len(quota) == 31
    assert len(np.unique(quota)) == 31


@pytest.mark.parametrize("size", [0, 300, -5])
def test_a_split_that_leaves_nothing_is_refused(size: int):
    with pytest.raises(DataError, match="--val-size must be between 1 and 299"):
        split_validation(arrays(300), size)


def test_a_recorded_split_is_rebuilt_and_checked():
    data = arrays(300)
    _, val, split = split_validation(data, 30)
    _, again, _ = split_from_meta(data, split.as_meta(), "ckpt.pt")
    assert np.array_equal(again.images, val.images)
    with pytest.raises(DataError, match="ckpt.pt was trained on another training set"):
        split_from_meta(arrays(300, seed=1), split.as_meta(), "ckpt.pt")
    with pytest.raises(DataError, match="records no validation split"):
        split_from_meta(data, None, "ckpt.pt")
    with pytest.raises(DataError, match="must be integers"):
        split_from_meta(data, {"size": "30"}, "ckpt.pt")


def test_other_pixels_with_the_same_labels_are_another_training_set():
    data = arrays(300)
    _, _, split = split_validation(data, 30)
    changed = ImageArrays(255 - data.images, data.labels, data.info)
    with pytest.raises(DataError, match="another training set"):
        split_from_meta(changed, split.as_meta(), "ckpt.pt")
    older = {k: v for k, v in split.as_meta().items() if k != "content_sha256"}
    split_from_meta(changed, older, "ckpt.pt")  # a record without it checks what it can
