import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from budget_edge.data.safe_pickle import safe_loads
from budget_edge.errors import DataError

from .formats import py2_style_pickle


class WritesMarker:
    """Unpickling this calls os.system: what a malicious 'CIFAR batch' would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_cifar_structures_round_trip():
    obj = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2], b"n": 3}
    loaded = safe_loads(py2_style_pickle(obj), "test")
    np.testing.assert_array_equal(loaded[b"data"], obj[b"data"])
    assert loaded[b"labels"] == [1, 2]
    assert loaded[b"n"] == 3


def test_numpy2_module_name_is_accepted_too():
    obj = {b"data": np.ones((1, 3), dtype=np.uint8)}
    loaded = safe_loads(pickle.dumps(obj, protocol=4), "test")
    assert loaded[b"data"].tolist() == [[1, 1, 1]]


def test_malicious_pickle_is_refused_without_running(tmp_path: Path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": WritesMarker(marker)}, protocol=3)
    with pytest.raises(DataError, match="refusing to unpickle posix.system"):
        safe_loads(payload, "evil batch")
    assert not marker.exists()


@pytest.mark.parametrize("global_name", [b"builtins\neval", b"numpy\nload", b"subprocess\nrun"])
def test_any_other_global_is_refused(global_name: bytes):
    payload = b"c" + global_name + b"\n(S'1'\ntR."
    with pytest.raises(DataError, match="refusing to unpickle"):
        safe_loads(payload, "batch")


def test_truncated_pickle_is_a_data_error():
    data = py2_style_pickle({b"data": np.zeros((4, 4), dtype=np.uint8)})
    with pytest.raises(DataError, match="truncated or corrupt"):
        safe_loads(data[: len(data) // 2], "batch")


def test_garbage_is_a_data_error():
    with pytest.raises(DataError, match="not a readable pickle"):
        safe_loads(b"\x00\x01garbage", "batch")
