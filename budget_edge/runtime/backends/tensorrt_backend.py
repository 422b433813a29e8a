"""TensorRT backend (TensorRT 10 Python API): one engine and execution context per graph.

Engines come from `budget-edge build-engines` on the target GPU and are listed
in the manifest's `tensorrt` section with the TensorRT version and GPU that
built them; an engine only runs on that pairing, so a mismatch is refused
before anything is deserialised.

Per call: each input is copied to a device buffer sized for the engine's
largest batch (`context.set_input_shape` gives the dynamic batch), the engine
runs with `execute_async_v3` on the backend's one CUDA stream, and the outputs
are copied back. Batches above the engine profile's maximum run in chunks.
Device memory goes through cuda-python (`cuda.bindings.runtime`, or the older
`cuda.cudart`). The runtime gathers and scatters images between blocks on the
host, so every graph call is a host round trip: simple, and the price is a copy
of each block's activations.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from budget_edge.errors import BackendError, ManifestError
from budget_edge.runtime.manifest import GraphSpec, Manifest, TensorRTSpec

# cuda-python 13 needs a CUDA 13 driver; JetPack 6 (and most desktops) have CUDA 12.
INSTALL_HINT = ("pip install tensorrt 'cuda-python>=12,<13' (on a Jetson, TensorRT comes with "
                "JetPack: sudo apt install nvidia-jetpack, then pip install 'cuda-python>=12,<13')")


# ---- imports ----------------------------------------------------------------------


def import_tensorrt() -> ModuleType:
    """The TensorRT module, or BackendError saying what to install."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError(f"TensorRT is not installed: {INSTALL_HINT}") from exc
    # Type stubs alone (tensorrt-stubs) make `import tensorrt` succeed as an empty
    # namespace package; the real module has the runtime classes.
    if not hasattr(tensorrt, "Runtime"):
        raise BackendError(f"the installed `tensorrt` has no Runtime (only type stubs?): "
                           f"{INSTALL_HINT}")
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's runtime API, from its new (`cuda.bindings`) or old location."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise BackendError(f"cuda-python is not installed: {INSTALL_HINT}") from exc
    return cudart


def tensorrt_unavailable() -> str | None:
    """Why the TensorRT backend cannot run here, or None when it can."""
    try:
        import_tensorrt()
        cudart = import_cudart()
        count = cuda_call(cudart.cudaGetDeviceCount())
    except BackendError as exc:
        return str(exc)
    if not count:
        return "no CUDA GPU is visible"
    return None


# ---- pure bookkeeping (tested without a GPU) ----------------------------------------


def cuda_call(result: Any) -> Any:
    """Unpack a cuda-python result tuple (error, values...); raise on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA call failed with {err!r}: check the GPU and driver "
                           "(nvidia-smi / tegrastats)")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def decode_gpu_name(raw: bytes | str) -> str:
    """cudaDeviceProp.name is a NUL-padded char array."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text.split("\x00", 1)[0].strip()


def check_engine_compat(spec: TensorRTSpec, trt_version: str, gpu: str,
                        compute_capability: str | None) -> None:
    """Engines run only on the TensorRT version and GPU that built them."""
    if spec.version != trt_version:
        raise BackendError(
            f"the engines were built with TensorRT {spec.version} but TensorRT {trt_version} "
            "is installed: run `budget-edge build-engines` again on this device, or install "
            f"TensorRT {spec.version}")
    if spec.gpu != gpu:
        raise BackendError(
            f"the engines were built on a {spec.gpu} but this GPU is a {gpu}: engines only "
            "run on the kind of GPU that built them; run `budget-edge build-engines` here")
    if (spec.compute_capability is not None and compute_capability is not None
            and spec.compute_capability != compute_capability):
        raise BackendError(
            f"the engines were built for compute capability {spec.compute_capability} but "
            f"this GPU has {compute_capability}: run `budget-edge build-engines` here")


def graphs_to_run(manifest: Manifest) -> list[str]:
    """Every graph the runtime may call: roles, block variants, skips, hot policies.

    Not the switch graph: on TensorRT every block is its own engine, and the
    runtime dispatches them (the switch graph is for ONNX Runtime on CPUs).
    """
    names = [n for r, n in manifest.roles.items() if n is not None and r != "switch"]
    for b in manifest.blocks:
        names += [v.graph for v in b.variants]
        if b.skip is not None:
            names.append(b.skip)
    names += [h.graph for h in manifest.hot_policies]
    return list(dict.fromkeys(names))


def check_engine_coverage(manifest: Manifest) -> None:
    assert manifest.tensorrt is not None
    missing = [g for g in graphs_to_run(manifest) if g not in manifest.tensorrt.engines]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise BackendError(f"no TensorRT engine for graph(s) {shown}: run `budget-edge "
                           "build-engines` again for this artifact")


def check_io(spec: GraphSpec, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """The engine's tensors must be the graph's, by name and in order."""
    want_in = [t.name for t in spec.inputs]
    want_out = [t.name for t in spec.outputs]
    if list(inputs) != want_in or sorted(outputs) != sorted(want_out):
        raise BackendError(
            f"the engine of graph {spec.name!r} has inputs {list(inputs)} and outputs "
            f"{list(outputs)}, but the manifest says {want_in} -> {want_out}: rebuild the "
            "engines from this artifact")


def batch_chunks(n: int, max_batch: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of at most max_batch images covering n."""
    if max_batch < 1:
        raise BackendError(f"engine profile allows batch {max_batch}: rebuild the engines")
    return [(s, min(s + max_batch, n)) for s in range(0, n, max_batch)]


def buffer_nbytes(shape: Sequence[int | str], max_batch: int, itemsize: int) -> int:
    """Bytes of a device buffer holding max_batch rows of (batch, *shape[1:])."""
    return max_batch * math.prod(int(v) for v in shape[1:]) * itemsize


def profile_max_batch(profile: Sequence[Any]) -> int:
    """Largest batch of an input's optimisation profile [min, opt, max] (of trt.Dims)."""
    if len(profile) != 3 or len(profile[2]) == 0:
        raise BackendError("the engine has no optimisation profile for its batch axis: "
                           "rebuild the engines with `budget-edge build-engines`")
    return int(profile[2][0])


# ---- the backend --------------------------------------------------------------------


@dataclass
class _Tensor:
    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # without the batch axis
    device: int  # device pointer


@dataclass
class _Engine:
    engine: Any
    context: Any
    inputs: list[_Tensor]
    outputs: list[_Tensor]
    max_batch: int
    buffers: list[int] = field(default_factory=list)


class TensorRTBackend:
    """Runs the artifact's TensorRT engines on the current CUDA device."""

    name = "tensorrt"

    def __init__(self, manifest: Manifest, directory: Path) -> None:
        if manifest.tensorrt is None:
            raise BackendError("this artifact has no TensorRT engines: run `budget-edge "
                               "build-engines DIR` on the target GPU")
        import_tensorrt()  # a clear error when missing; then the typed import below
        import tensorrt as trt

        self._cudart = cudart = import_cudart()
        if not cuda_call(cudart.cudaGetDeviceCount()):
            raise BackendError("no CUDA GPU is visible: use backend='onnxruntime'")
        device = cuda_call(cudart.cudaGetDevice())
        props = cuda_call(cudart.cudaGetDeviceProperties(device))
        self.gpu = decode_gpu_name(props.name)
        self.compute_capability = f"{props.major}.{props.minor}"
        check_engine_compat(manifest.tensorrt, str(trt.__version__), self.gpu,
                            self.compute_capability)
        check_engine_coverage(manifest)
        self._manifest = manifest
        self._dir = Path(directory)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime: trt.Runtime = trt.Runtime(self._logger)
        self._stream = cuda_call(cudart.cudaStreamCreate())
        self._engines: dict[str, _Engine] = {}
        # One stream, one context and one set of buffers per engine: calls from
        # several threads (a server) take turns.
        self._lock = threading.Lock()

    def _engine(self, graph: str) -> _Engine:
        entry = self._engines.get(graph)
        if entry is None:
            entry = self._load(graph)
            self._engines[graph] = entry
        return entry

    def _load(self, graph: str) -> _Engine:
        import tensorrt as trt

        assert self._manifest.tensorrt is not None
        spec = self._manifest.graph(graph)
        path = self._dir / self._manifest.tensorrt.engines[graph]
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ManifestError(f"TensorRT could not deserialise {path}: rebuild the engines "
                                "on this device with `budget-edge build-engines`")
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        check_io(spec, ins, outs)
        max_batch = profile_max_batch(engine.get_tensor_profile_shape(ins[0], 0))
        loaded = _Engine(engine, context, [], [], max_batch)
        shapes = {t.name: t.shape for t in [*spec.inputs, *spec.outputs]}
        for name in [*ins, *outs]:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            nbytes = buffer_nbytes(shapes[name], max_batch, dtype.itemsize)
            ptr = int(cuda_call(self._cudart.cudaMalloc(max(nbytes, 1))))
            loaded.buffers.append(ptr)
            if not context.set_tensor_address(name, ptr):
                raise BackendError(f"TensorRT refused the buffer of tensor {name!r} of {graph}")
            tensor = _Tensor(name, dtype, tuple(int(v) for v in shapes[name][1:]), ptr)
            (loaded.inputs if name in ins else loaded.outputs).append(tensor)
        order = {t.name: i for i, t in enumerate(spec.outputs)}
        loaded.outputs.sort(key=lambda t: order[t.name])
        return loaded

    def load(self, graphs: Sequence[str]) -> None:
        """Deserialise these engines now rather than on first use."""
        with self._lock:
            for g in graphs:
                self._engine(g)

    def run(self, graph: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        n = int(inputs[0].shape[0])
        with self._lock:
            e = self._engine(graph)
            chunks = [self._run_chunk(graph, e, inputs, start, stop)
                      for start, stop in batch_chunks(n, e.max_batch)]
        if len(chunks) == 1:
            return chunks[0]
        return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]

    def _run_chunk(self, graph: str, e: _Engine, inputs: Sequence[np.ndarray], start: int,
                   stop: int) -> list[np.ndarray]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        staged = []  # host arrays must live until the stream is synchronised
        for t, arr in zip(e.inputs, inputs, strict=True):
            host = np.ascontiguousarray(arr[start:stop], dtype=t.dtype)
            staged.append(host)
            if not e.context.set_input_shape(t.name, host.shape):
                raise BackendError(f"engine of {graph} rejects input shape {host.shape}: "
                                   "rebuild the engines for this input size")
            cuda_call(cudart.cudaMemcpyAsync(t.device, host.ctypes.data, host.nbytes, h2d,
                                             self._stream))
        outs = [np.empty((stop - start, *t.shape), t.dtype) for t in e.outputs]
        if not e.context.execute_async_v3(int(self._stream)):
            raise BackendError(f"TensorRT failed to run the engine of {graph}")
        for t, host in zip(e.outputs, outs, strict=True):
            cuda_call(cudart.cudaMemcpyAsync(host.ctypes.data, t.device, host.nbytes, d2h,
                                             self._stream))
        cuda_call(cudart.cudaStreamSynchronize(self._stream))
        return [o if o.dtype == np.float32 else o.astype(np.float32) for o in outs]

    def close(self) -> None:
        with self._lock:
            for e in self._engines.values():
                for ptr in e.buffers:
                    cuda_call(self._cudart.cudaFree(ptr))
            self._engines.clear()
            if self._stream is not None:
                cuda_call(self._cudart.cudaStreamDestroy(self._stream))
                self._stream = None
