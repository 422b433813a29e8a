"""The serialized graphs in runtime/device_graphs.py are what tools/device_graphs.py builds,
and they compute what they say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort

from budget_edge.runtime import device_graphs
from budget_edge.runtime.inputs import prepare_images, scale_and_shift
from budget_edge.runtime.manifest import Preprocessing

TOOL = Path(__file__).resolve().parents[2] / "tools" / "device_graphs.py"


def _tool():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("device_graphs_tool", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_module_is_what_the_tool_writes() -> None:
    assert Path(device_graphs.__file__).read_text() == _tool().module_text()


def _session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def test_gather_and_scatter_rows() -> None:
    data = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    rows = np.array([3, 1], np.int64)
    (picked,) = _session(device_graphs.GATHER_ROWS).run(None, {"data": data, "rows": rows})
    np.testing.assert_array_equal(picked, data[[3, 1]])
    (written,) = _session(device_graphs.SCATTER_ROWS).run(
        None, {"data": data, "rows": rows[:, None], "updates": -picked}
    )
    want = data.copy()
    want[[3, 1]] = -picked
    np.testing.assert_array_equal(written, want)


def test_preprocess_matches_the_host_normalisation() -> None:
    pre = Preprocessing([0.5, 0.4, 0.3], [0.25, 0.2, 0.3], [3, 5, 7])
    pixels = np.random.default_rng(0).integers(0, 256, (4, 5, 7, 3), np.uint8)
    scale, shift = scale_and_shift(pre)
    (image,) = _session(device_graphs.PREPROCESS).run(
        None, {"pixels": pixels, "scale": scale, "shift": shift}
    )
    np.testing.assert_allclose(image, prepare_images(pixels, pre), rtol=1e-5, atol=1e-5)
