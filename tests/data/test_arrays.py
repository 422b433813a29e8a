import numpy as np
import pytest

from budget_edge.data.arrays import DatasetInfo, ImageArrays, channel_stats
from budget_edge.errors import DataError

INFO = DatasetInfo("toy", 3, ("a", "b", "c"), (0.5,), (0.25,), (1, 4, 4))


def arrays(n: int = 5, labels: np.ndarray | None = None) -> ImageArrays:
    images = np.zeros((n, 4, 4, 1), dtype=np.uint8)
    if labels is None:
        labels = np.arange(n, dtype=np.int64) % 3
    return ImageArrays(images, labels, INFO)


def test_subset_takes_the_first_samples():
    data = arrays(5)
    part = data.subset(2)
    assert len(part) == 2
    assert part.labels.tolist() == [0, 1]
    assert data.subset(None) is data
    assert data.subset(10) is data


def test_subset_rejects_a_limit_below_one():
    with pytest.raises(DataError, match="at least 1"):
        arrays(5).subset(0)


def test_labels_out_of_range_are_refused():
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\]"):
        arrays(2, np.array([0, 3], dtype=np.int64))


def test_wrong_dtypes_and_shapes_are_refused():
    with pytest.raises(DataError, match="uint8"):
        ImageArrays(np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int64), INFO)
    with pytest.raises(DataError, match="int64"):
        ImageArrays(np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2, np.int32), INFO)
    with pytest.raises(DataError, match="dataset info says"):
        ImageArrays(np.zeros((2, 5, 4, 1), np.uint8), np.zeros(2, np.int64), INFO)


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (9000, 3, 2, 3), dtype=np.uint8)  # crosses a chunk edge
    mean, std = channel_stats(images)
    scaled = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(std, scaled.std(axis=0), rtol=1e-6)


def test_channel_stats_of_a_constant_channel_give_std_one():
    _, std = channel_stats(np.full((2, 2, 2, 1), 7, dtype=np.uint8))
    assert std == (1.0,)
