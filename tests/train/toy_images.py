"""A tiny learnable image dataset for training tests: class = bright quadrant."""

from __future__ import annotations

import numpy as np

from budget_edge.data.arrays import DatasetInfo, ImageArrays

INFO = DatasetInfo("toy", 4, ("a", "b", "c", "d"), (0.3,), (0.3,), (1, 8, 8))


def toy_arrays(n: int, seed: int) -> ImageArrays:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = rng.integers(0, 60, (n, 8, 8, 1)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 2)
        images[i, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4] += 150
    return ImageArrays(images, labels.astype(np.int64), INFO)
