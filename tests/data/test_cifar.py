from pathlib import Path

import numpy as np
import pytest

from budget_edge.data.cifar import load_cifar
from budget_edge.errors import DataError

from .formats import (
    cifar_batch,
    cifar_files,
    py2_style_pickle,
    write_cifar_dir,
    write_cifar_tar,
)

ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
SIZES = {
    ("cifar10", "train"): 20,
    ("cifar10", "test"): 6,
    ("cifar100", "train"): 12,
    ("cifar100", "test"): 5,
}


def roots(tmp_path: Path, variant: str) -> list[Path]:
    """Every accepted root: the archive, its parent, the extracted folder, its parent."""
    files = cifar_files(variant)
    (tmp_path / "archive").mkdir()
    archive = write_cifar_tar(tmp_path / "archive" / ARCHIVES[variant], files)
    extracted = write_cifar_dir(tmp_path / "extracted", files)
    return [archive, archive.parent, extracted / FOLDERS[variant], extracted]


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_archive_and_folder_give_the_same_arrays(tmp_path: Path, variant: str, split: str):
    loaded = [load_cifar(variant, root, split) for root in roots(tmp_path, variant)]
    n = SIZES[(variant, split)]
    for data in loaded:
        assert data.images.shape == (n, 32, 32, 3)
        assert data.images.dtype == np.uint8
        assert data.labels.dtype == np.int64
        np.testing.assert_array_equal(data.images, loaded[0].images)
        np.testing.assert_array_equal(data.labels, loaded[0].labels)
    info = loaded[0].info
    assert info.num_classes == (10 if variant == "cifar10" else 100)
    assert info.class_names[1] == ("class1" if variant == "cifar10" else "fine1")
    assert info.input_size == (3, 32, 32)


def test_rows_are_decoded_channel_major(tmp_path: Path):
    files = cifar_files("cifar10")
    batch = cifar_batch(1, 10, b"labels", 0)
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)])
    row[5] = 99  # red channel, row 0, column 5
    batch[b"data"] = row.astype(np.uint8)[None]
    files["cifar-10-batches-py/test_batch"] = py2_style_pickle(batch)
    test = load_cifar("cifar10", write_cifar_dir(tmp_path, files), "test")
    assert test.images[0, 0, 0].tolist() == [10, 20, 30]
    assert test.images[0, 0, 5].tolist() == [99, 20, 30]


def test_train_concatenates_the_five_batches_in_order(tmp_path: Path):
    train = load_cifar("cifar10", write_cifar_dir(tmp_path, cifar_files("cifar10")), "train")
    expected = np.concatenate(
        [cifar_batch(4, 10, b"labels", i)[b"data"] for i in range(1, 6)]  # type: ignore[misc]
    )
    np.testing.assert_array_equal(train.images.transpose(0, 3, 1, 2).reshape(20, -1), expected)


def test_no_root_says_where_to_download():
    with pytest.raises(DataError, match="cifar-10-python.tar.gz.*--data-dir"):
        load_cifar("cifar10", None)


def test_empty_folder_says_where_it_looked(tmp_path: Path):
    with pytest.raises(DataError, match=f"at {tmp_path};.*download"):
        load_cifar("cifar100", tmp_path)


def test_truncated_archive(tmp_path: Path):
    archive = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", cifar_files("cifar10"))
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataError, match="not a readable .tar.gz"):
        load_cifar("cifar10", archive)


def test_corrupt_archive(tmp_path: Path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"this is no gzip stream" * 10)
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_cifar("cifar10", archive)


def test_archive_missing_a_batch(tmp_path: Path):
    files = cifar_files("cifar10")
    del files["cifar-10-batches-py/data_batch_3"]
    archive = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", files)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_3"):
        load_cifar("cifar10", archive, "train")


def test_folder_missing_a_batch(tmp_path: Path):
    files = cifar_files("cifar10")
    del files["cifar-10-batches-py/test_batch"]
    with pytest.raises(DataError, match="test_batch is missing"):
        load_cifar("cifar10", write_cifar_dir(tmp_path, files), "test")


def test_corrupt_batch_file(tmp_path: Path):
    files = cifar_files("cifar100")
    files["cifar-100-python/test"] = files["cifar-100-python/test"][:300]
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_cifar("cifar100", write_cifar_dir(tmp_path, files), "test")


def test_malicious_batch_in_an_archive_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    files = cifar_files("cifar10")
    evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    files["cifar-10-batches-py/test_batch"] = evil
    archive = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", files)
    with pytest.raises(DataError, match="refusing to unpickle os.system"):
        load_cifar("cifar10", archive, "test")
    assert not marker.exists()


def test_batch_without_data(tmp_path: Path):
    files = cifar_files("cifar10")
    files["cifar-10-batches-py/test_batch"] = py2_style_pickle({b"labels": [1]})
    with pytest.raises(DataError, match="no 'data' entry"):
        load_cifar("cifar10", write_cifar_dir(tmp_path, files), "test")


def test_batch_with_wrong_row_length(tmp_path: Path):
    files = cifar_files("cifar10")
    batch = cifar_batch(2, 10, b"labels", 0)
    batch[b"data"] = np.zeros((2, 100), dtype=np.uint8)
    files["cifar-10-batches-py/test_batch"] = py2_style_pickle(batch)
    with pytest.raises(DataError, match="100 values, not 3072"):
        load_cifar("cifar10", write_cifar_dir(tmp_path, files), "test")


def test_label_count_mismatch(tmp_path: Path):
    files = cifar_files("cifar10")
    batch = cifar_batch(2, 10, b"labels", 0)
    batch[b"labels"] = [1]
    files["cifar-10-batches-py/test_batch"] = py2_style_pickle(batch)
    with pytest.raises(DataError, match="2 images but 1 labels"):
        load_cifar("cifar10", write_cifar_dir(tmp_path, files), "test")


def test_meta_with_wrong_class_count(tmp_path: Path):
    files = cifar_files("cifar10")
    files["cifar-10-batches-py/batches.meta"] = py2_style_pickle({b"label_names": [b"a"]})
    with pytest.raises(DataError, match="expected 10 class names"):
        load_cifar("cifar10", write_cifar_dir(tmp_path, files), "test")
