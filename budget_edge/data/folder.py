"""Image folders: one sub-folder per class of PNG/JPEG files (torch-free, Python 3.10).

`root/<class>/*.png`. If `root/train` and `root/test` exist, the split picks
one of them; otherwise the whole root is both splits. Images are not resized:
they must all have the same size. Grayscale folders give one channel, anything
else is converted to RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from budget_edge.data.arrays import DatasetInfo, ImageArrays, channel_stats
from budget_edge.errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GRAY_MODES = {"1", "L", "I;16", "I", "F"}

HOW_TO = (
    "lay the data out as ROOT/<class name>/<image>.png (optionally under ROOT/train, ROOT/test)"
)


def split_folder(root: Path, split: str) -> Path:
    """ROOT/<split> when the data is split that way, otherwise ROOT itself."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; {HOW_TO}")
    candidate = root / split
    if (root / "train").is_dir() and (root / "test").is_dir():
        return candidate
    return root


def list_images(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and (file, label) pairs."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {folder} has no class sub-folders; {HOW_TO}")
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (folder / name).iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS
        )
        items.extend((path, label) for path in files)
    if not items:
        raise DataError(f"image folder {folder} has class folders but no image files; {HOW_TO}")
    return classes, items


def read_image(path: Path, gray: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib.

    try:
        with Image.open(path) as image:
            converted = image.convert("L" if gray else "RGB")
            array = np.asarray(converted, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path} ({exc}); remove or replace it") from None
    return array[..., None] if gray else array


def is_gray(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.mode in GRAY_MODES
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path} ({exc}); remove or replace it") from None


def load_folder(root: str | Path | None, split: str = "train") -> ImageArrays:
    """Load every image under the class folders, all of one size, as uint8 (N, H, W, C)."""
    if root is None:
        raise DataError(f"the folder dataset needs --data-dir; {HOW_TO}")
    folder = split_folder(Path(root), split)
    classes, items = list_images(folder)
    gray = all(is_gray(path) for path, _ in items)
    first = read_image(items[0][0], gray)
    images = np.empty((len(items), *first.shape), dtype=np.uint8)
    for i, (path, _) in enumerate(items):
        array = first if i == 0 else read_image(path, gray)
        if array.shape != first.shape:
            raise DataError(
                f"image {path} is {array.shape[1]}x{array.shape[0]} but {items[0][0]} is "
                f"{first.shape[1]}x{first.shape[0]}; every image must have the same size "
                "(resize them first)"
            )
        images[i] = array
    labels = np.array([label for _, label in items], dtype=np.int64)
    # Statistics of the images themselves: an image folder has no published ones.
    mean, std = channel_stats(images)
    h, w, c = first.shape
    info = DatasetInfo(
        name="folder",
        num_classes=len(classes),
        class_names=tuple(classes),
        mean=mean,
        std=std,
        input_size=(c, h, w),
    )
    return ImageArrays(images, labels, info)
