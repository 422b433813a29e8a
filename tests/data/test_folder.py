from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from budget_edge.data.folder import load_folder
from budget_edge.errors import DataError


def save(path: Path, array: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def rgb(value: int, size: tuple[int, int] = (6, 5)) -> np.ndarray:
    return np.full((*size, 3), value, dtype=np.uint8)


def test_rgb_folder_loads_sorted_classes(tmp_path: Path):
    save(tmp_path / "zebra" / "a.png", rgb(10), "RGB")
    save(tmp_path / "cat" / "b.png", rgb(20), "RGB")
    save(tmp_path / "cat" / "a.png", rgb(30), "RGB")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    data = load_folder(tmp_path)
    assert data.info.class_names == ("cat", "zebra")
    assert data.images.shape == (3, 6, 5, 3)
    assert data.info.input_size == (3, 6, 5)
    # Files within a class are sorted: cat/a, cat/b, then zebra/a.
    assert data.images[:, 0, 0, 0].tolist() == [30, 20, 10]
    assert data.labels.tolist() == [0, 0, 1]
    assert data.info.mean[0] == pytest.approx(20 / 255)


def test_grayscale_folder_gives_one_channel(tmp_path: Path):
    save(tmp_path / "a" / "x.png", np.full((4, 4), 5, dtype=np.uint8), "L")
    save(tmp_path / "b" / "y.png", np.full((4, 4), 7, dtype=np.uint8), "L")
    data = load_folder(tmp_path)
    assert data.images.shape == (2, 4, 4, 1)
    assert data.info.input_size == (1, 4, 4)


def test_mixed_modes_become_rgb(tmp_path: Path):
    save(tmp_path / "a" / "x.png", np.full((4, 4), 5, dtype=np.uint8), "L")
    save(tmp_path / "b" / "y.jpg", rgb(200, (4, 4)), "RGB")
    data = load_folder(tmp_path)
    assert data.images.shape == (2, 4, 4, 3)
    assert data.images[0, 0, 0].tolist() == [5, 5, 5]


def test_train_and_test_subfolders_pick_the_split(tmp_path: Path):
    save(tmp_path / "train" / "a" / "x.png", rgb(1), "RGB")
    save(tmp_path / "train" / "b" / "x.png", rgb(2), "RGB")
    save(tmp_path / "test" / "a" / "x.png", rgb(3), "RGB")
    save(tmp_path / "test" / "b" / "x.png", rgb(4), "RGB")
    assert load_folder(tmp_path, "train").images[:, 0, 0, 0].tolist() == [1, 2]
    assert load_folder(tmp_path, "test").images[:, 0, 0, 0].tolist() == [3, 4]


def test_images_of_different_sizes_are_refused(tmp_path: Path):
    save(tmp_path / "a" / "x.png", rgb(1, (6, 5)), "RGB")
    save(tmp_path / "b" / "y.png", rgb(1, (8, 8)), "RGB")
    with pytest.raises(DataError, match=r"y.png is 8x8 but .*x.png is 5x6; every image"):
        load_folder(tmp_path)


def test_missing_root(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="needs --data-dir"):
        load_folder(None)


def test_no_class_folders(tmp_path: Path):
    save(tmp_path / "loose.png", rgb(1), "RGB")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_folder(tmp_path)


def test_class_folders_without_images(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        load_folder(tmp_path)


def test_corrupt_image_is_named(tmp_path: Path):
    save(tmp_path / "a" / "x.png", rgb(1), "RGB")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_folder(tmp_path)
