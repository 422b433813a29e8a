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
    with pytest.raises(
        BackendError, match="'CUDAExecutionProvider' is not available.*onnxruntime-gpu"
    ):
        choose_providers([CPU], ["CUDAExecutionProvider"])


def test_session_options() -> None:
    so = session_options(ort, 3)
    assert so.intra_op_num_threads == 3
    assert so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(ort, None).intra_op_num_threads >= 1


def test_sessions_share_one_arena(resnet_artifact: Any) -> None:
    plain = session_options(ort, 1)
    with pytest.raises(RuntimeError, match="does not have configuration"):
        plain.get_session_config_entry("session.use_env_allocators")
    assert register_shared_arena(ort)
    assert register_shared_arena(ort)
    backend = OnnxRuntimeBackend(resnet_artifact.manifest, resnet_artifact.path, threads=1)
    assert backend._options.get_session_config_entry("session.use_env_allocators") == "1"
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    shared = backend.run("stem", [x])[0]
    alone = ort.InferenceSession(str(resnet_artifact.path / "stem.onnx"), plain, providers=[CPU])
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
    with pytest.raises(ManifestError, match=r"inputs \['x'\] but the manifest says \['image'\]"):
        OnnxRuntimeBackend(m, fresh_artifact.path)  # at load, before any request


# ---- the IOBinding (device tensor) path, run here on the CPU device --------------------


def test_gpu_providers_get_budget_edges_options(tmp_path: Any) -> None:
    from budget_edge.runtime.backends.onnxruntime_backend import with_options

    got = with_options(
        [
            "TensorrtExecutionProvider",
            "CUDAExecutionProvider",
            ("CUDAExecutionProvider", {"device_id": 1}),
            "CPUExecutionProvider",
        ],
        tmp_path,
    )
    trt, cuda, given, cpu = got
    assert trt[1]["trt_engine_cache_enable"]
    assert trt[1]["trt_timing_cache_enable"]
    assert trt[1]["trt_engine_cache_path"] == str(tmp_path / "engines" / "ort-tensorrt")
    assert cuda == (
        "CUDAExecutionProvider",
        {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"},
    )
    assert given == ("CUDAExecutionProvider", {"device_id": 1})  # the user's own stay
    assert cpu == "CPUExecutionProvider"


@pytest.mark.parametrize("kind", ["resnet", "resnext"])
def test_device_tensors_give_the_host_paths_logits(kind: str, tmp_path: Any) -> None:
    """Every dispatch path (whole-mask graphs, switch graph, block chain with gathered
    rows, the policy) with OrtValues bound by IOBinding, against the numpy path."""
    from budget_edge.runtime import BudgetRuntime
    from budget_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from budget_edge.runtime.manifest import Manifest

    from .conftest import make_net, write_artifact

    net = make_net(kind, channels=1 if kind == "resnext" else 3, seed=2)
    write_artifact(net, tmp_path, hot=[[1] * 3 + [0] * (net_k(net) - 3)], switch=True)
    m = Manifest.load(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, *net.input_size)).astype(np.float32)
    k = m.num_components
    masks = (rng.random((7, k)) < 0.6).astype(np.uint8)
    masks[:, 3:8] = np.sort(masks[:, 3:8], axis=1)[:, ::-1] if kind == "resnext" else masks[:, 3:8]
    masks[0] = [1] * 3 + [0] * (k - 3)  # the hot policy
    for dispatch in ("auto", "chain"):
        host = BudgetRuntime(
            m, tmp_path, OnnxRuntimeBackend(m, tmp_path, threads=1), dispatch=dispatch
        )
        dev_backend = OnnxRuntimeBackend(m, tmp_path, threads=1, device="cpu")
        dev = BudgetRuntime(m, tmp_path, dev_backend, dispatch=dispatch)
        for call in (
            {"mask": masks},
            {"mask": masks[0]},
            {"budget": 0.5},
            {"mask": np.tile(masks[2], (7, 1))},
        ):
            a, b = host.infer(x, **call), dev.infer(x, **call)
            np.testing.assert_allclose(b.logits, a.logits, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(b.mask, a.mask)
        c, h, w = net.input_size
        pixels = rng.integers(0, 256, (7, h, w, c), np.uint8)  # normalised on the device
        a, b = host.infer(pixels, mask=masks), dev.infer(pixels, mask=masks)
        np.testing.assert_allclose(b.logits, a.logits, rtol=1e-5, atol=1e-5)
        assert dev_backend._rows is not None  # rows were gathered through the graphs


def net_k(net: Any) -> int:
    return sum(1 if b.kind == "resnet" else b.num_paths for b in net.blocks)


def test_device_tensors_never_come_back_between_stem_and_head(resnet_artifact: Any) -> None:
    """With IOBinding every graph takes OrtValues, and only the probabilities and the
    logits are fetched: one host transfer with a mask, two with the policy."""
    from budget_edge.runtime import BudgetRuntime
    from budget_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    m, root = resnet_artifact.manifest, resnet_artifact.path
    backend = OnnxRuntimeBackend(m, root, threads=1, device="cpu")
    fetched: list[int] = []
    inner_run, inner_to_host = backend.run_device, backend.to_host

    def run_device(graph: str, inputs: Any) -> Any:
        assert all(isinstance(t, ort.OrtValue) for t in inputs), graph
        return inner_run(graph, inputs)

    def to_host(tensors: Any) -> Any:
        fetched.append(len(tensors))
        return inner_to_host(tensors)

    backend.run_device = run_device  # type: ignore[method-assign]
    backend.to_host = to_host  # type: ignore[method-assign]
    rt = BudgetRuntime(m, root, backend, dispatch="chain")
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    rt.infer(x, mask=np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 1], [0, 0, 1]]))
    assert fetched == [1]
    fetched.clear()
    rt.infer(x, budget=0.5)
    assert fetched == [1, 1]


def test_onnxruntime_telemetry_is_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from budget_edge.runtime.backends.onnxruntime_backend import import_onnxruntime

    calls: list[str] = []
    fake = types.ModuleType("onnxruntime")
    fake.disable_telemetry_events = lambda: calls.append("off")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    assert import_onnxruntime() is fake
    assert calls == ["off"]


def test_a_listed_cuda_provider_that_does_not_load_is_caught_at_load(
    resnet_artifact: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime-gpu without cuDNN: CUDA is listed, and the real ONNX Runtime runs the
    session on the CPU. Chosen by default: one warning, then the CPU path throughout;
    asked for by name: one clear error."""
    from budget_edge.runtime import BudgetRuntime

    listed = ["CUDAExecutionProvider", CPU]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    with pytest.warns(RuntimeWarning, match="lists CUDAExecutionProvider but its session runs"):
        rt = BudgetRuntime.load(resnet_artifact.path, backend="onnxruntime", threads=1)
    assert rt.backend.device is None
    assert rt.backend.providers == [CPU]
    assert rt.backend._weights is not None  # CPU sessions share their weights again
    c, h, w = rt.manifest.preprocessing.input_size
    x = np.zeros((2, h, w, c), np.uint8)
    assert rt.infer(x, budget=0.5).logits.shape == (2, rt.num_classes)  # the CPU path works
    rt.close()
    with pytest.raises(BackendError, match="did not load.*providers=\\['CPUExecutionProvider'\\]"):
        BudgetRuntime.load(resnet_artifact.path, backend="onnxruntime", providers=listed[:1])
