"""TensorRT backend without a GPU: compatibility decisions, bookkeeping, import errors,
the call protocol against stand-in modules, and type-checking against tensorrt-stubs."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budget_edge.errors import BackendError, ManifestError
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.backends import tensorrt_backend as tb
from budget_edge.runtime.manifest import (
    GraphSpec,
    Manifest,
    TensorRTSpec,
    TensorSpec,
    write_manifest,
)

from .fake_tensorrt import DeviceMemory, FakeCudart, make_fake_tensorrt

SPEC = TensorRTSpec("10.3.0.26", "Orin", "fp16", 8, {}, "8.7")


def test_matching_engines_are_accepted() -> None:
    tb.check_engine_compat(SPEC, "10.3.0.26", "Orin", "8.7")
    tb.check_engine_compat(
        TensorRTSpec("10.3.0.26", "Orin", "fp16", 8, {}), "10.3.0.26", "Orin", "8.7"
    )  # no capability recorded: the name decides


@pytest.mark.parametrize(
    "version,gpu,cc,message",
    [
        ("10.0.1.6", "Orin", "8.7", "built with TensorRT 10.3.0.26 but TensorRT 10.0.1.6"),
        ("10.3.0.26", "NVIDIA GeForce RTX 4090", "8.9", "built on a Orin but this GPU is a NVIDIA"),
        ("10.3.0.26", "Orin", "8.6", "compute capability 8.7 but this GPU has 8.6"),
    ],
)
def test_foreign_engines_are_refused(version: str, gpu: str, cc: str, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        tb.check_engine_compat(SPEC, version, gpu, cc)


def test_bookkeeping_helpers() -> None:
    assert tb.batch_chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert tb.batch_chunks(3, 8) == [(0, 3)]
    with pytest.raises(BackendError, match="profile"):
        tb.batch_chunks(3, 0)
    assert tb.buffer_nbytes(["batch", 16, 32, 32], 8, 4) == 8 * 16 * 32 * 32 * 4
    assert tb.buffer_nbytes(["batch"], 8, 4) == 32
    assert tb.profile_max_batch([[1, 3], [4, 3], [16, 3]]) == 16
    with pytest.raises(BackendError, match="optimisation profile"):
        tb.profile_max_batch([])
    assert tb.decode_gpu_name(b"Orin\x00\x00garbage") == "Orin"
    assert tb.decode_gpu_name("NVIDIA H100") == "NVIDIA H100"


def test_cuda_call_unpacks_and_raises() -> None:
    assert tb.cuda_call((0,)) is None
    assert tb.cuda_call((0, 5)) == 5
    assert tb.cuda_call((0, 5, 6)) == (5, 6)
    with pytest.raises(BackendError, match="CUDA call failed"):
        tb.cuda_call((2, None))


def test_check_io() -> None:
    spec = GraphSpec(
        "policy",
        "policy.onnx",
        [TensorSpec("image", ["batch", 3, 8, 8]), TensorSpec("budget", ["batch"])],
        [TensorSpec("probs", ["batch", 3]), TensorSpec("value", ["batch", 1])],
    )
    tb.check_io(spec, ["image", "budget"], ["value", "probs"])  # output order may differ
    with pytest.raises(BackendError, match="rebuild the engines"):
        tb.check_io(spec, ["budget", "image"], ["probs", "value"])
    with pytest.raises(BackendError, match="rebuild the engines"):
        tb.check_io(spec, ["image", "budget"], ["probs"])


def test_engine_coverage(resnet_artifact: Any) -> None:
    m = resnet_artifact.manifest
    names = tb.graphs_to_run(m)
    assert {"stem", "head", "policy", "full", "hot0", "block1_skip", "block2_p0"} <= set(names)
    m2 = _with_trt(m, {g: f"{g}.engine" for g in names if g != "block1_skip"})
    with pytest.raises(BackendError, match="no TensorRT engine for graph.*block1_skip"):
        tb.check_engine_coverage(m2)
    tb.check_engine_coverage(_with_trt(m, {g: f"{g}.engine" for g in names}))


def _with_trt(m: Any, engines: dict[str, str]) -> Any:
    import copy

    m2 = copy.deepcopy(m)
    m2.tensorrt = TensorRTSpec("10.3.0", "Fake GPU", "fp32", 4, engines, "8.7")
    return m2


def test_missing_tensorrt_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendError, match="pip install tensorrt 'cuda-python>=12,<13'.*JetPack"):
        tb.import_tensorrt()
    assert "pip install tensorrt" in str(tb.tensorrt_unavailable())


@pytest.mark.parametrize(
    "version, ok",
    [
        ("10.3.0.26", True),
        ("10.13.3", True),
        ("11.4.0.106", True),
        ("8.5.2.2", False),
        ("10.0.1", False),
        ("12.0.0", False),
        ("dev", False),
    ],
)
def test_supported_tensorrt_versions(version: str, ok: bool) -> None:
    if ok:
        tb.check_tensorrt_version(version)
    else:
        with pytest.raises(BackendError, match="TensorRT|version"):
            tb.check_tensorrt_version(version)


def test_stub_only_tensorrt_is_not_mistaken_for_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """tensorrt-stubs alone makes `import tensorrt` succeed as an empty namespace."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(BackendError, match="only type stubs"):
        tb.import_tensorrt()


def test_cudart_import_locations(monkeypatch: pytest.MonkeyPatch) -> None:
    new = types.ModuleType("cuda.bindings.runtime")
    old = types.ModuleType("cuda.cudart")
    cuda = types.ModuleType("cuda")
    cuda.cudart = old  # type: ignore[attr-defined]
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = new  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", new)
    assert tb.import_cudart() is new
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", old)
    assert tb.import_cudart() is old  # cuda-python before 12.6
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with pytest.raises(BackendError, match="cuda-python is not installed"):
        tb.import_cudart()


# ---- the call protocol, with stand-ins for tensorrt and cudart --------------------------


def _add_engines(artifact: Any, gpu: str, cc: str, preprocess: bool = True) -> None:
    """An 'engine' (JSON naming the ONNX graph) per graph, max batch 4, in the manifest;
    and the preprocess engine that build-engines adds (runtime/device_graphs.py)."""
    from budget_edge.runtime.device_graphs import PREPROCESS

    root = artifact.path
    (root / "engines").mkdir()
    engines = {}
    for g in artifact.manifest.graphs:
        path = root / "engines" / f"{g.name}.engine"
        path.write_text(json.dumps({"onnx": g.file, "max_batch": 4}))
        engines[g.name] = f"engines/{g.name}.engine"
    prep = None
    if preprocess:
        (root / "engines" / "preprocess.onnx").write_bytes(PREPROCESS)
        (root / "engines" / "preprocess.engine").write_text(
            json.dumps({"onnx": "engines/preprocess.onnx", "max_batch": 4})
        )
        prep = "engines/preprocess.engine"
    artifact.manifest.tensorrt = TensorRTSpec("10.3.0", gpu, "fp16", 4, engines, cc, prep)
    write_manifest(root, artifact.manifest)


@pytest.fixture
def fake_trt(
    fresh_artifact: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, FakeCudart, types.ModuleType]:
    root = fresh_artifact.path
    _add_engines(fresh_artifact, "Fake GPU", "8.7")
    cudart = FakeCudart()
    trt = make_fake_tensorrt(root, cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tb, "import_cudart", lambda: cudart)
    return fresh_artifact, cudart, trt


def test_runtime_on_tensorrt_protocol(fake_trt: tuple[Any, FakeCudart, types.ModuleType]) -> None:
    artifact, cudart, trt = fake_trt
    assert tb.tensorrt_unavailable() is None
    rt = BudgetRuntime.load(artifact.path)  # auto: engines + TensorRT available
    assert rt.backend.name == "tensorrt"
    net = artifact.net
    x = np.random.default_rng(0).standard_normal((10, *net.input_size)).astype(np.float32)
    mask = (np.random.default_rng(1).random((10, 3)) < 0.5).astype(np.uint8)
    mask[:6] = [0, 1, 1]  # 6 images through blocks 1, 2: chunks of 4 + 2
    result = rt.infer(x, mask=mask)
    np.testing.assert_allclose(result.logits, net.np_forward(x, mask), atol=1e-4, rtol=1e-4)
    policy = rt.infer(x, budget=0.5)  # two inputs (image, budget), two outputs
    assert policy.probs is not None
    np.testing.assert_allclose(policy.probs, net.np_policy(x, np.full(10, 0.5)), atol=1e-5)
    stem = next(e for e in trt.engines if e.onnx == "stem.onnx")  # type: ignore[attr-defined]
    before = stem.contexts[0].runs
    (features,) = rt.backend.run("stem", [x])
    assert stem.contexts[0].runs - before == 3  # 10 images in chunks of 4, 4, 2
    np.testing.assert_allclose(features[8:], rt.backend.run("stem", [x[8:]])[0])
    buffers = set(cudart.buffers)
    assert buffers
    rt.close()
    assert not cudart.buffers
    assert set(cudart.freed) >= buffers
    assert cudart.streams == 0


def test_load_sessions_deserialises_every_engine_and_the_preprocess_engine(
    fake_trt: tuple[Any, FakeCudart, types.ModuleType],
) -> None:
    """A server makes every engine at load, so that a redeploy that deletes the artifact
    directory never leaves a graph to be read on first use."""
    artifact, _, trt = fake_trt
    rt = BudgetRuntime.load(artifact.path, backend="tensorrt")
    rt.load_sessions()
    made = {e.onnx for e in trt.engines}  # type: ignore[attr-defined]
    graphs = {artifact.manifest.graph(name).file for name in rt.graph_names()}
    assert made == graphs | {"engines/preprocess.onnx"}
    rt.close()


def test_activations_stay_on_the_device(fake_trt: tuple[Any, FakeCudart, types.ModuleType]) -> None:
    """One upload per input, the probabilities and the logits back, at most two
    synchronisations per infer (one with an explicit mask); no buffer allocated twice."""
    artifact, cudart, _ = fake_trt
    rt = BudgetRuntime.load(artifact.path, backend="tensorrt")
    net = artifact.net
    x = np.random.default_rng(0).standard_normal((6, *net.input_size)).astype(np.float32)
    mask = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 0, 0]], np.uint8)

    def counted(**kwargs: Any) -> tuple[Any, dict[str, int]]:
        before = dict(cudart.counts)
        result = rt.infer(x[: kwargs.pop("n", 6)], **kwargs)
        return result, {k: cudart.counts[k] - before[k] for k in before}

    result, c = counted(mask=mask)
    np.testing.assert_allclose(result.logits, net.np_forward(x, mask), atol=1e-4, rtol=1e-4)
    assert (c["h2d"], c["d2h"], c["sync"]) == (1, 1, 1)
    assert c["d2d"] > 0  # rows gathered and scattered on the device
    result, c = counted(budget=0.5)
    assert (c["h2d"], c["d2h"], c["sync"]) == (2, 2, 2)  # image, budget up; probs, logits down
    np.testing.assert_allclose(result.logits, net.np_forward(x, result.mask), atol=1e-4, rtol=1e-4)
    _, c = counted(mask=mask)
    assert c["malloc"] == 0  # the pools serve a repeated call
    _, c = counted(mask=mask[:1], n=1)
    assert c["d2d"] == 0  # batch 1: no gather or scatter
    rt.close()


def test_every_context_shares_one_activation_scratch(
    fake_trt: tuple[Any, FakeCudart, types.ModuleType],
) -> None:
    """One stream runs one engine at a time, so one scratch as large as the largest
    engine's need serves every context: device memory no longer grows with the number of
    engines (an 8 GB Jetson shares it with the CPU). The fake engines need 4 KiB per
    image of their profile's maximum, and refuse to run without memory, as TensorRT."""
    artifact, cudart, trt = fake_trt
    rt = BudgetRuntime.load(artifact.path, backend="tensorrt")
    x = np.random.default_rng(0).standard_normal((3, *artifact.net.input_size)).astype(np.float32)
    rt.infer(x, mask=[[1, 0, 1], [1, 1, 1], [0, 0, 0]])
    rt.infer(x, budget=0.5)
    contexts = [c for e in trt.engines for c in e.contexts]  # type: ignore[attr-defined]
    assert len(contexts) >= 4
    assert {c.strategy for c in contexts} == {"USER_MANAGED"}
    scratches = {c.scratch for c in contexts}
    assert len(scratches) == 1  # one buffer, every context pointed at it
    ((address, size),) = scratches
    need = max(e.device_memory_size_v2 for e in trt.engines)  # type: ignore[attr-defined]
    assert size == need
    assert cudart.size_of(address) >= need
    rt.close()
    assert address not in cudart.buffers


def test_uint8_pixels_are_normalised_on_the_gpu(
    fake_trt: tuple[Any, FakeCudart, types.ModuleType],
) -> None:
    """uint8 pixels go up as they are (a quarter of the bytes) and the preprocess
    engine normalises them: the same logits as normalising on the host."""
    artifact, cudart, trt = fake_trt
    rt = BudgetRuntime.load(artifact.path, backend="tensorrt")
    pixels = np.random.default_rng(3).integers(0, 256, (6, 8, 8, 3), np.uint8)
    mask = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 0, 0]], np.uint8)
    host = BudgetRuntime.load(artifact.path, backend="onnxruntime").infer(pixels, mask=mask)
    before = dict(cudart.counts)
    got = rt.infer(pixels, mask=mask)
    np.testing.assert_allclose(got.logits, host.logits, atol=1e-4, rtol=1e-4)
    assert cudart.counts["h2d"] - before["h2d"] == 1
    assert cudart.counts["sync"] - before["sync"] == 1
    prep = next(e for e in trt.engines if e.onnx == "engines/preprocess.onnx")  # type: ignore[attr-defined]
    assert prep.contexts[0].runs == 2  # 6 images: chunks of 4 and 2
    rt.close()


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0.106"])
def test_the_same_backend_runs_on_tensorrt_10_and_11(
    fresh_artifact: Any, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    """The runtime calls exist in both (test_tensorrt_names.py); engines say which built them."""
    root = fresh_artifact.path
    _add_engines(fresh_artifact, "Fake GPU", "8.7")
    spec = fresh_artifact.manifest.tensorrt
    spec.version = version
    write_manifest(root, fresh_artifact.manifest)
    cudart = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(root, cudart, version))
    monkeypatch.setattr(tb, "import_cudart", lambda: cudart)
    with BudgetRuntime.load(root, backend="tensorrt") as rt:
        x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
        got = rt.infer(x, mask=[1, 0, 1]).logits
    np.testing.assert_allclose(
        got, fresh_artifact.net.np_forward(x, np.array([[1, 0, 1]] * 3)), atol=1e-4, rtol=1e-4
    )


def test_wrong_image_size_is_refused_by_the_engine(
    fake_trt: tuple[Any, FakeCudart, types.ModuleType],
) -> None:
    artifact, _, _ = fake_trt
    rt = BudgetRuntime.load(artifact.path, backend="tensorrt")
    with pytest.raises(BackendError, match="rejects input shape"):
        rt.backend.run("stem", [np.zeros((1, 3, 9, 8), np.float32)])
    rt.close()


def test_the_stand_in_stream_is_really_asynchronous() -> None:
    """What keeps the device tests honest: results exist only after the synchronisation,
    and host memory a queued copy needs cannot be freed before it."""
    cudart = FakeCudart()
    h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    _, dev = cudart.cudaMalloc(16)
    _, pinned = cudart.cudaMallocHost(16)
    _, back = cudart.cudaMallocHost(16)
    src = np.arange(4, dtype=np.float32)
    ctypes.memmove(pinned, src.ctypes.data, 16)
    cudart.cudaMemcpyAsync(dev, pinned, 16, h2d, 1)
    cudart.cudaMemcpyAsync(back, dev, 16, d2h, 1)
    out = np.zeros(4, np.float32)
    ctypes.memmove(out.ctypes.data, back, 16)
    assert not out.any()  # read before the sync: nothing arrived yet
    with pytest.raises(AssertionError, match="freed while work on the stream"):
        cudart.cudaFreeHost(pinned)
    cudart.cudaStreamSynchronize(1)
    ctypes.memmove(out.ctypes.data, back, 16)
    np.testing.assert_array_equal(out, src)
    with pytest.raises(AssertionError, match="outside a buffer"):
        cudart.cudaMemcpyAsync(dev + 8, pinned, 16, h2d, 1)


def test_row_runs_make_one_copy_per_run_of_rows() -> None:
    assert tb.row_runs([0, 1, 2]) == [(0, 0, 3)]
    assert tb.row_runs([1, 2, 5, 6, 7, 0]) == [(1, 0, 2), (5, 2, 3), (0, 5, 1)]
    assert tb.row_runs([]) == []


def _real_cudart() -> Any:
    try:
        cudart = tb.import_cudart()
        return cudart if tb.cuda_call(cudart.cudaGetDeviceCount()) else None
    except BackendError:
        return None


def test_cuda_buffers_on_a_real_gpu(fresh_artifact: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real cuda-python buffers, stream and copies; only the engines are stand-ins."""
    cudart = _real_cudart()
    if cudart is None:
        pytest.skip("needs cuda-python and a CUDA GPU")
    props = tb.cuda_call(cudart.cudaGetDeviceProperties(tb.cuda_call(cudart.cudaGetDevice())))
    _add_engines(fresh_artifact, tb.decode_gpu_name(props.name), f"{props.major}.{props.minor}")
    monkeypatch.setitem(
        sys.modules, "tensorrt", make_fake_tensorrt(fresh_artifact.path, DeviceMemory(cudart))
    )
    rt = BudgetRuntime.load(fresh_artifact.path, backend="tensorrt")
    net = fresh_artifact.net
    x = np.random.default_rng(0).standard_normal((10, *net.input_size)).astype(np.float32)
    mask = (np.random.default_rng(1).random((10, 3)) < 0.5).astype(np.uint8)
    result = rt.infer(x, mask=mask)
    np.testing.assert_allclose(result.logits, net.np_forward(x, mask), atol=1e-4, rtol=1e-4)
    policy = rt.infer(x, budget=0.5)
    assert policy.probs is not None
    np.testing.assert_allclose(policy.probs, net.np_policy(x, np.full(10, 0.5)), atol=1e-5)
    rt.close()


def test_tensorrt_refuses_foreign_engines(
    fake_trt: tuple[Any, FakeCudart, types.ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact, cudart, trt = fake_trt
    trt.__version__ = "10.7.0"  # type: ignore[attr-defined]
    with pytest.raises(BackendError, match="TensorRT 10.3.0 but TensorRT 10.7.0"):
        BudgetRuntime.load(artifact.path, backend="tensorrt")
    trt.__version__ = "10.3.0"  # type: ignore[attr-defined]
    cudart.gpu = b"Jetson AGX Thor\x00"
    with pytest.raises(BackendError, match="built on a Fake GPU but this GPU is a Jetson AGX"):
        BudgetRuntime.load(artifact.path, backend="tensorrt")
    cudart.devices = 0
    with pytest.raises(BackendError, match="no CUDA GPU"):
        BudgetRuntime.load(artifact.path, backend="tensorrt")
    with pytest.warns(RuntimeWarning, match="no CUDA GPU is visible"):
        assert BudgetRuntime.load(artifact.path).backend.name == "onnxruntime"  # auto falls back


def test_cuda_python_newer_than_the_driver_is_reported(
    fake_trt: tuple[Any, FakeCudart, types.ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact, cudart, _ = fake_trt
    monkeypatch.setattr(tb, "bindings_version", lambda: "13.0.1")
    with pytest.raises(
        BackendError,
        match=r"cuda-python 13.0.1 needs a CUDA 13 driver, but "
        r"this driver supports CUDA 12.6: pip install "
        r"'cuda-python>=12.6,<13'",
    ):
        BudgetRuntime.load(artifact.path, backend="tensorrt")
    with pytest.warns(RuntimeWarning, match="TensorRT cannot run here .*cuda-python 13.0.1"):
        rt = BudgetRuntime.load(artifact.path)  # auto: falls back, but says why
    assert rt.backend.name == "onnxruntime"
    monkeypatch.setattr(tb, "bindings_version", lambda: "12.6.2")
    assert BudgetRuntime.load(artifact.path).backend.name == "tensorrt"
    cudart.driver = 13000
    monkeypatch.setattr(tb, "bindings_version", lambda: "13.0.1")
    assert BudgetRuntime.load(artifact.path).backend.name == "tensorrt"


def test_a_jetson_refuses_a_cuda_runtime_newer_than_its_driver(
    fake_trt: tuple[Any, FakeCudart, types.ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip's pick for cuda-python>=12.6,<13 is 12.9, whose static 12.9 runtime a JetPack 6
    driver (12.6) refuses with error 35; a desktop's driver takes it (minor-version
    compatibility). The fake driver reports 12.6."""
    artifact, cudart, _ = fake_trt
    assert cudart.driver == 12060
    monkeypatch.setattr(tb, "bindings_version", lambda: "12.9.10")
    monkeypatch.setattr(tb, "is_tegra", lambda: True)
    with pytest.raises(
        BackendError,
        match=r"cuda-python 12.9.10 brings a CUDA 12.9 runtime, "
        r"newer than this Jetson's CUDA 12.6 driver.*"
        r"pip install 'cuda-python>=12.6,<12.7'",
    ):
        BudgetRuntime.load(artifact.path, backend="tensorrt")
    with pytest.warns(RuntimeWarning, match="TensorRT cannot run here .*12.9.10"):
        assert BudgetRuntime.load(artifact.path).backend.name == "onnxruntime"
    monkeypatch.setattr(tb, "bindings_version", lambda: "12.6.2")
    assert BudgetRuntime.load(artifact.path, backend="tensorrt").backend.name == "tensorrt"
    monkeypatch.setattr(tb, "bindings_version", lambda: "12.9.10")
    monkeypatch.setattr(tb, "is_tegra", lambda: False)  # a desktop: minor compatibility
    assert BudgetRuntime.load(artifact.path, backend="tensorrt").backend.name == "tensorrt"


def test_undeserialisable_engine(fake_trt: tuple[Any, FakeCudart, types.ModuleType]) -> None:
    artifact, _, _ = fake_trt
    (artifact.path / "engines" / "stem.engine").write_bytes(b"\x00 not an engine")
    write_manifest(artifact.path, artifact.manifest)
    rt = BudgetRuntime.load(artifact.path, backend="tensorrt")
    with pytest.raises(ManifestError, match="could not deserialise.*stem.engine"):
        rt.infer(np.zeros((1, 3, 8, 8), np.float32), mask=[0, 1, 0])


# ---- static typing against tensorrt-stubs --------------------------------------------------

# tensorrt-stubs 10.13 ships .pyi files without py.typed (so mypy ignores them) and with
# a few lines that are not valid Python; this test repairs a copy and checks against it.
_STUB_FIXES = [
    (re.compile(r"\((self(?:: IPluginV3)?), in: "), r"(\1, in_: "),
    (
        re.compile(r"power: Weights = None, channel_axis: int\)"),
        "power: Weights = None, channel_axis: int = ...)",
    ),
]

_REMOVED_API = """
import tensorrt as trt

def use_removed_api(engine: trt.ICudaEngine, context: trt.IExecutionContext) -> None:
    context.execute_async_v2([], 0)
"""


def test_typechecks_against_tensorrt_stubs(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None or spec.origin is None or importlib.util.find_spec("mypy") is None:
        pytest.skip("tensorrt-stubs or mypy not installed")
    site = Path(spec.origin).parent.parent
    if not (site / "tensorrt_bindings" / "tensorrt.pyi").exists():
        pytest.skip("tensorrt-stubs layout not recognised")
    stubs = tmp_path / "stubs"
    for pkg in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(site / pkg, stubs / pkg)
    pyi = stubs / "tensorrt_bindings" / "tensorrt.pyi"
    text = pyi.read_text()
    for pattern, repl in _STUB_FIXES:
        text = pattern.sub(repl, text)
    pyi.write_text(text)
    (tmp_path / "mypy.ini").write_text(
        "[mypy]\npython_version = 3.10\nignore_missing_imports = True\n"
        "[mypy-tensorrt.*]\nignore_errors = True\n[mypy-tensorrt_bindings.*]\n"
        "ignore_errors = True\n"
    )
    control = tmp_path / "removed_api.py"
    control.write_text(_REMOVED_API)
    backend = Path(tb.__file__)
    builder = backend.parents[2] / "export" / "trt_engine.py"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-incremental",
            str(backend),
            str(builder),
            str(control),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(stubs)},
        timeout=300,
    )
    lines = [ln for ln in out.stdout.splitlines() if ": error:" in ln]
    # The control proves the stubs are really consulted: the removed v2 call is caught.
    assert any("removed_api.py" in ln and "execute_async_v2" in ln for ln in lines), out.stdout
    assert not [ln for ln in lines if "tensorrt_backend.py" in ln or "trt_engine.py" in ln], (
        out.stdout
    )


def test_the_gpu_data_path_script_runs_dry(tmp_path: Path) -> None:
    """benchmarks/gpu_data_path.py on the host-memory stand-in: the logits match numpy
    and the counts hold; on a GPU the same script runs NVRTC kernels instead."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_data_path.py"
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            "--dry-run",
            "--calls",
            "2",
            "--batches",
            "1,5",
            "--out",
            str(tmp_path / "dry"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "dry.json").read_text())["rows"]
    assert len(rows) == 4
    for row in rows:
        assert row["max_abs_error"] < 1e-4, row
        syncs = 1 if row["mode"] == "mask" else 2
        assert row["per_infer"]["sync"] == syncs
        assert row["per_infer"]["d2h"] == syncs
        if row["batch"] == 1:
            assert row["per_infer"]["d2d"] == 0  # one image: no gather or scatter
        elif row["mode"] == "mask":
            assert row["per_infer"]["d2d"] > 0  # a mask per image: rows gathered
        # uint8 pixels go up once and the preprocess engine normalises them on the device
        assert row["per_infer"]["launches"]["prep"] == 1
        assert row["per_infer"]["h2d"] == (1 if row["mode"] == "mask" else 2)
    table = (tmp_path / "dry.md").read_text()
    assert "| kernel ms | stream span ms |" in table  # GPU time apart from the host's waits


def test_the_pool_reuses_size_classes_and_frees_what_it_should_not_keep() -> None:
    live: dict[int, int] = {}
    counter = iter(range(1, 1000))

    def alloc(n: int) -> tuple[int, int]:
        ptr = next(counter) * 1 << 32
        live[ptr] = n
        return (0, ptr)

    def free(ptr: int) -> tuple[int]:
        del live[ptr]
        return (0,)

    pool = tb._Pool(alloc, free, keep_bytes=4096)
    a = pool.get(1000)
    assert live[a] == 1024  # power-of-two classes
    pool.release()
    assert pool.get(700) == a  # same class: reused, no allocation
    big = pool.get(1 << 20)  # one huge batch, above keep_bytes
    pool.release()
    assert big in live  # what a call used is kept: the next such call allocates nothing
    assert pool.get(1 << 20) == big
    pool.release()
    # Two kinds of call alternating, each above keep_bytes: neither frees the other's.
    allocated = len(live)
    for _ in range(3):
        pool.get(1 << 20)
        pool.release()
        smalls = [pool.get(1 << 17) for _ in range(8)]
        pool.release()
    assert len(live) == allocated + 8
    assert big in live
    assert all(p in live for p in smalls)
    for _ in range(tb.RECENT_CALLS):  # normal calls only, for a while
        pool.get(700)
        pool.release()
    assert big not in live
    assert a in live
    pool.close()
    assert not live


def test_the_precision_that_runs_is_the_engines(
    fake_trt: tuple[Any, FakeCudart, types.ModuleType],
) -> None:
    artifact, _, _ = fake_trt
    with BudgetRuntime.load(artifact.path) as rt:  # auto: the engines run
        assert (rt.backend.name, rt.precision) == ("tensorrt", "fp16")
    # Asking for the engines' precision runs them too; another precision runs ONNX graphs.
    from budget_edge.export.quantize import QuantizeSettings, quantize_artifact

    engines = Manifest.load(artifact.path).tensorrt
    quantize_artifact(artifact.path, QuantizeSettings("fp16"))  # unlists the fp16 engines
    quantize_artifact(
        artifact.path,
        QuantizeSettings("int8", calib_images=8, max_rows=8, budgets=[0.5]),
        images=np.zeros((8, 8, 8, 3), np.uint8),
    )
    m = Manifest.load(artifact.path)
    m.tensorrt = engines  # as build-engines --precision fp16 would list them again
    write_manifest(artifact.path, m)
    with BudgetRuntime.load(artifact.path, precision="fp16") as rt:
        assert (rt.backend.name, rt.precision) == ("tensorrt", "fp16")
    with BudgetRuntime.load(artifact.path, precision="int8") as rt:
        assert (rt.backend.name, rt.precision) == ("onnxruntime", "int8")


def test_release_after_a_failed_call_waits_for_the_stream(
    fake_trt: tuple[Any, FakeCudart, types.ModuleType],
) -> None:
    """A call that raised half-way left copies queued: its buffers go back to the pool
    (and may be freed) only after the stream has done with them."""
    artifact, cudart, _ = fake_trt
    rt = BudgetRuntime.load(artifact.path, backend="tensorrt")
    staged = rt.backend.to_device(np.ones((4, *artifact.net.input_size), np.float32))
    assert cudart.queue  # the upload is queued, as when a later step raised
    syncs = cudart.counts["sync"]
    rt.backend.release()
    assert cudart.counts["sync"] == syncs + 1
    assert not cudart.queue
    rt.backend.release()  # nothing queued since: no extra synchronisation
    assert cudart.counts["sync"] == syncs + 1
    assert staged.nbytes > 0
    rt.close()


@pytest.mark.parametrize(
    "machine, words",
    [
        ("no libcuda", r"cannot reach the CUDA driver \(RuntimeError: Failed to dlopen"),
        ("driver 0", "no CUDA GPU is visible"),
    ],
)
def test_no_driver_is_a_reason_to_fall_back_never_a_traceback(
    fake_trt: tuple[Any, FakeCudart, types.ModuleType],
    machine: str,
    words: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cuda-python 12.6.x raises RuntimeError without libcuda; the runtime API reports a
    driver version of 0 with none loaded (once misread as "CUDA 0.0")."""
    artifact, cudart, _ = fake_trt
    monkeypatch.setattr(tb, "bindings_version", lambda: "12.9.10")
    if machine == "no libcuda":
        cudart.no_libcuda = True
    else:
        cudart.driver, cudart.devices = 0, 0
    why = tb.tensorrt_unavailable()
    assert why is not None
    assert re.search(words, why), why
    assert "0.0" not in why
    with pytest.warns(RuntimeWarning, match="TensorRT cannot run here"):
        rt = BudgetRuntime.load(artifact.path, backend="auto")
    assert rt.backend.name == "onnxruntime"
    rt.close()
