"""Sessions made from one weight pool: the same outputs as plain sessions, one buffer per
distinct tensor, and a plain session wherever the pool cannot help."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.backends import onnxruntime_backend as ort_backend
from budget_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, session_options
from budget_edge.runtime.backends.shared_weights import ALIGNMENT, WeightPool

CPU = ["CPUExecutionProvider"]


def _options(level: Any | None) -> Any:
    options = session_options(ort, 1)
    if level is not None:
        options.graph_optimization_level = level
    return options


def _conv_model(weight: np.ndarray, name: str) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", weight.shape[1], 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h"], ["y"]),
        ],
        name,
        [x],
        [y],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def test_sessions_from_a_pool_give_the_plain_sessions_outputs() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    model = _conv_model(weight, "a")
    x = rng.standard_normal((2, 8, 6, 6)).astype(np.float32)
    pool = WeightPool(ort)
    shared = pool.session(model, _options, CPU)
    assert shared is not None
    plain = ort.InferenceSession(model, sess_options=_options(None), providers=CPU)
    np.testing.assert_allclose(
        shared.run(None, {"x": x})[0], plain.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5
    )


def test_equal_weights_of_different_graphs_are_one_aligned_buffer() -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    other = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    pool = WeightPool(ort)
    sessions = [
        pool.session(_conv_model(weight, name), _options, CPU) for name in ("a", "b", "c")
    ]  # three graphs, one filter
    assert pool.distinct_bytes * 3 == pool.total_bytes > 0
    sessions.append(pool.session(_conv_model(other, "d"), _options, CPU))
    assert pool.total_bytes == 2 * pool.distinct_bytes  # four graphs, two filters
    assert all(b.ctypes.data % ALIGNMENT == 0 for b in pool._buffers)


def test_the_runtime_shares_weights_and_keeps_its_results(
    resnet_artifact: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    results = {}
    for shared in (False, True):
        monkeypatch.setattr(ort_backend, "SHARED_WEIGHTS", shared)
        with BudgetRuntime.load(resnet_artifact.path, threads=1) as rt:
            results[shared] = [
                rt.infer(x, budget=0.5).logits,
                rt.run_full(x),
                rt.infer(x, mask=[1, 0, 1]).logits,
            ]
            held, distinct = rt.backend.weight_bytes  # type: ignore[attr-defined]
            assert (held > distinct > 0) if shared else (held, distinct) == (0, 0)
    for a, b in zip(results[False], results[True], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_without_optimised_models_every_session_keeps_its_own(
    resnet_artifact: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An onnxruntime that cannot write the optimised model still runs every graph."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot save the optimised model")

    backend = OnnxRuntimeBackend(resnet_artifact.manifest, resnet_artifact.path, threads=1)
    monkeypatch.setattr(WeightPool, "session", fail)
    x = np.zeros((2, 3, 8, 8), np.float32)
    assert backend.run("stem", [x])[0].shape == (2, 4, 8, 8)
    assert backend.weight_bytes == (0, 0)
    backend.close()


def test_the_device_path_keeps_each_sessions_own_weights(resnet_artifact: Any) -> None:
    """The pool is for the CPU provider's blocked layouts; the device path (a GPU
    provider's, forced onto the CPU here) keeps ORT's own weights and the same outputs."""
    manifest, path = resnet_artifact.manifest, resnet_artifact.path
    host = OnnxRuntimeBackend(manifest, path, threads=1)
    device = OnnxRuntimeBackend(manifest, path, threads=1, device="cpu")
    graphs = ["stem", "full"]
    host.load(graphs)
    device.load(graphs)
    held, distinct = host.weight_bytes
    assert held > 0
    assert distinct > 0
    assert device.weight_bytes == (0, 0)
    c, h, w = resnet_artifact.net.input_size
    x = np.random.default_rng(0).standard_normal((2, c, h, w)).astype(np.float32)
    np.testing.assert_array_equal(device.run("full", [x])[0], host.run("full", [x])[0])
    host.close()
    device.close()


def test_graphs_with_if_bodies_keep_their_own_weights(tmp_path: Any) -> None:
    """The switch graph keeps its own weights (its optimised model may not load again,
    and add_initializer would bind a branch's tensor by a main-graph name); it and the
    sessions made from the pool give the plain sessions' outputs at every batch size."""
    from budget_edge.runtime.manifest import Manifest

    from .conftest import make_net, write_artifact

    net = make_net("resnet", seed=2)
    write_artifact(net, tmp_path, hot=[[1, 1, 1]], switch=True)
    m = Manifest.load(tmp_path)
    shared = OnnxRuntimeBackend(m, tmp_path, threads=1)
    shared.load(["stem", "full", "switch"])
    held, _ = shared.weight_bytes
    assert held > 0
    pool = WeightPool(ort)
    assert pool.session((tmp_path / "switch.onnx").read_bytes(), _options, CPU) is None
    plain = {
        g: ort.InferenceSession(str(tmp_path / f"{g}.onnx"), _options(None), providers=CPU)
        for g in ("stem", "switch")
    }
    rng = np.random.default_rng(3)
    for n in (7, 1, 3):
        x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
        np.testing.assert_allclose(
            shared.run("stem", [x])[0], plain["stem"].run(None, {"x": x})[0], rtol=1e-5, atol=1e-5
        )
        for codes in ([1, 1, 1], [0, 1, 0], [1, 0, 1]):
            feeds = dict(
                zip(
                    [i.name for i in plain["switch"].get_inputs()],
                    [x, np.asarray(codes, np.int64)],
                    strict=True,
                )
            )
            np.testing.assert_allclose(
                shared.run("switch", list(feeds.values()))[0],
                plain["switch"].run(None, feeds)[0],
                rtol=1e-5,
                atol=1e-5,
            )
    shared.close()


def test_the_optimised_models_leave_no_files_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    weight = np.ones((4, 2, 3, 3), np.float32)
    pool = WeightPool(ort)
    assert pool.session(_conv_model(weight, "a"), _options, CPU) is not None
    assert list(tmp_path.iterdir()) == []


def test_sharing_survives_close_and_reuse(resnet_artifact: Any) -> None:
    backend = OnnxRuntimeBackend(resnet_artifact.manifest, resnet_artifact.path, threads=1)
    x = np.ones((2, 3, 8, 8), np.float32)
    first = backend.run("full", [x])[0]
    held, _ = backend.weight_bytes
    backend.close()
    np.testing.assert_array_equal(backend.run("full", [x])[0], first)
    assert backend.weight_bytes[0] == 2 * held  # made again from the pool
