"""ONNX Runtime backend: providers, session options, lazy sessions, errors."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from budget_edge.errors import BackendError, ManifestError
from budget_edge.runtime.backends.onnxruntime_backend import (
    OnnxRuntimeBackend,
    choose_providers,
    import_onnxruntime,
    register_shared_arena,
    session_options,
)
from budget_edge.runtime.manifest import write_manifest

CPU = "CPUExecutionProvider"


def test_default_providers() -> None:
    assert choose_providers([CPU], None) == [CPU]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]
    # CUDA by default; the TensorRT EP only when asked (it builds engines at load time)
    assert choose_providers(gpu, None) == ["CUDAExecutionProvider", CPU]
    asked = [("TensorrtExecutionProvider", {"trt_fp16_enable": True})]
    assert choose_providers(gpu, asked) == [*asked, CPU]


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(BackendError, match="'CUDAExecutionProvider' is not available.*"
                                           "onnxruntime-gpu"):
        choose_providers([CPU], ["CUDAExecutionProvider"])


def test_session_options() -> None:
    so = session_options(ort, 3)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(ort, None).intra_op_num_threads >= 1


def test_sessions_share_one_arena(resnet_artifact: Any) -> None:
    plain = session_options(ort, 1)
    with pytest.raises(RuntimeError, match="does not have configuration"):
        plain.get_session_config_entry("session.use_env_allocators")
    assert register_shared_arena(ort) and register_shared_arena(ort)  # the second is a no-op
    backend = OnnxRuntimeBackend(resnet_artifact.manifest, resnet_artifact.path, threads=1)
    assert backend._options.get_session_config_entry("session.use_env_allocators") == "1"
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    shared = backend.run("stem", [x])[0]
    alone = ort.InferenceSession(str(resnet_artifact.path / "stem.onnx"), plain,
                                 providers=[CPU])
    np.testing.assert_allclose(shared, alone.run(None, {"x": x})[0], atol=1e-6)


def test_old_onnxruntime_keeps_an_arena_per_session(monkeypatch: pytest.MonkeyPatch) -> None:
    import budget_edge.runtime.backends.onnxruntime_backend as module

    monkeypatch.setattr(module, "_arena_registered", False)
    assert register_shared_arena(object()) is False  # no create_and_register_allocator


def test_missing_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendError, match="pip install onnxruntime"):
        import_onnxruntime()


def test_sessions_are_created_on_first_use(resnet_artifact: Any) -> None:
    backend = OnnxRuntimeBackend(resnet_artifact.manifest, resnet_artifact.path, threads=1)
    assert backend.providers == [CPU]
    assert not backend._sessions
    x = np.zeros((2, 3, 8, 8), np.float32)
    (features,) = backend.run("stem", [x])
    assert features.shape == (2, 4, 8, 8)
    assert list(backend._sessions) == ["stem"]
    backend.load(["head", "block0_p0"])
    assert set(backend._sessions) == {"stem", "head", "block0_p0"}
    # outputs are ours to write into (the runtime scatters in place)
    assert features.flags.writeable
    backend.close()
    assert not backend._sessions


def test_input_names_must_match_the_manifest(fresh_artifact: Any) -> None:
    m = fresh_artifact.manifest
    m.graph("stem").inputs[0].name = "image"
    write_manifest(fresh_artifact.path, m)
    backend = OnnxRuntimeBackend(m, fresh_artifact.path)
    with pytest.raises(ManifestError, match=r"inputs \['x'\] but the manifest says \['image'\]"):
        backend.run("stem", [np.zeros((1, 3, 8, 8), np.float32)])
