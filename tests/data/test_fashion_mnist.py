import gzip
from pathlib import Path

import numpy as np
import pytest

from budget_edge.data.fashion_mnist import DEFAULT_ROOT, load_fashion_mnist
from budget_edge.errors import DataError

from .formats import write_idx

REAL = DEFAULT_ROOT / "train-images-idx3-ubyte.gz"


def test_generated_idx_files_load(fmnist_dir: Path):
    train = load_fashion_mnist(fmnist_dir, "train")
    test = load_fashion_mnist(fmnist_dir, "test")
    assert train.images.shape == (20, 28, 28, 1)
    assert test.images.shape == (10, 28, 28, 1)
    assert train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    assert train.labels.tolist() == [i % 10 for i in range(20)]
    assert train.info.input_size == (1, 28, 28)
    assert train.info.class_names[0] == "T-shirt/top"
    assert len(train.info.class_names) == 10


def test_pixels_keep_their_order(tmp_path: Path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 4]))
    test = load_fashion_mnist(tmp_path, "test")
    np.testing.assert_array_equal(test.images[..., 0], images)


def test_missing_folder_says_how_to_get_the_data(tmp_path: Path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_missing_file_names_the_file(fmnist_dir: Path):
    (fmnist_dir / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz not found"):
        load_fashion_mnist(fmnist_dir)


def test_wrong_magic_number(fmnist_dir: Path):
    # A labels file where the images should be: magic 0x801 instead of 0x803.
    write_idx(fmnist_dir / "train-images-idx3-ubyte.gz", np.zeros(20))
    with pytest.raises(DataError, match="magic number 0x00000801, expected 0x00000803"):
        load_fashion_mnist(fmnist_dir)


def test_truncated_data(fmnist_dir: Path):
    path = fmnist_dir / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-5]))
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_fashion_mnist(fmnist_dir)


def test_truncated_gzip_stream(fmnist_dir: Path):
    path = fmnist_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="not a readable gzip file"):
        load_fashion_mnist(fmnist_dir)


def test_not_gzip_at_all(fmnist_dir: Path):
    (fmnist_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"hello, not gzip")
    with pytest.raises(DataError, match="not a readable gzip file"):
        load_fashion_mnist(fmnist_dir)


def test_counts_must_agree(fmnist_dir: Path):
    write_idx(fmnist_dir / "train-labels-idx1-ubyte.gz", np.zeros(19))
    with pytest.raises(DataError, match="20 images but 19 labels"):
        load_fashion_mnist(fmnist_dir)


def test_images_must_be_28x28(fmnist_dir: Path):
    write_idx(fmnist_dir / "train-images-idx3-ubyte.gz", np.zeros((20, 32, 32)))
    with pytest.raises(DataError, match="expected 28x28"):
        load_fashion_mnist(fmnist_dir)


def test_labels_out_of_range(fmnist_dir: Path):
    write_idx(fmnist_dir / "train-labels-idx1-ubyte.gz", np.full(20, 10))
    with pytest.raises(DataError, match="out of range"):
        load_fashion_mnist(fmnist_dir)


@pytest.mark.skipif(not REAL.exists(), reason="Fashion-MNIST not installed (dataset-fashion-mnist)")
class TestRealFashionMnist:
    def test_shapes_and_labels(self):
        train = load_fashion_mnist(split="train")
        test = load_fashion_mnist(split="test")
        assert train.images.shape == (60000, 28, 28, 1)
        assert test.images.shape == (10000, 28, 28, 1)
        assert train.labels.min() == 0
        assert train.labels.max() == 9
        # Fashion-MNIST is exactly balanced: 6000 and 1000 per class.
        assert np.bincount(train.labels).tolist() == [6000] * 10
        assert np.bincount(test.labels).tolist() == [1000] * 10

    def test_recorded_mean_and_std(self):
        train = load_fashion_mnist(split="train")
        pixels = train.images.astype(np.float64) / 255.0
        assert abs(pixels.mean() - train.info.mean[0]) < 5e-5
        assert abs(pixels.std() - train.info.std[0]) < 5e-5
