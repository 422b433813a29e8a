"""Read the CIFAR python pickles without running code from the file.

The official CIFAR batches are Python 2 pickles of dicts whose keys are bytes,
with lists of ints/bytes and one numpy uint8 `data` array. An ordinary
`pickle.load` would call any function the file names; this unpickler resolves
only the three numpy globals an array needs and refuses every other global.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from budget_edge.errors import DataError

# The function numpy itself names when it pickles an array, taken from an
# array's reduce tuple rather than from numpy's private modules.
_RECONSTRUCT = np.zeros(0, dtype=np.uint8).__reduce__()[0]

# ndarray pickles name numpy.core.multiarray._reconstruct (numpy 1, the official
# files) or numpy._core.multiarray._reconstruct (numpy 2, files written today).
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that allows plain containers and numpy arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name}: a CIFAR file holds only dicts, "
                "lists, bytes and numpy arrays, so this file is not an official CIFAR "
                "batch (it may be malicious); download the dataset again"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refusing to unpickle a persistent id: not an official CIFAR batch")


def safe_loads(data: bytes, source: str) -> Any:
    """Unpickle `data` (from `source`, named in errors) with only the allowed globals."""
    try:
        # encoding="bytes": Python 2 str values (keys, array buffers) stay bytes.
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # pickle raises many types on corrupt input
        raise DataError(
            f"{source} is not a readable pickle ({type(exc).__name__}: {exc}); "
            "the file is truncated or corrupt, download the dataset again"
        ) from None
