"""TensorRT backend (TensorRT 10 Python API): one engine and execution context per graph.

Engines come from `budget-edge build-engines` on the target GPU and are listed
in the manifest's `tensorrt` section with the TensorRT version and GPU that
built them; an engine only runs on that pairing, so a mismatch is refused
before anything is deserialised.

Activations stay on the GPU. The runtime hands the backend its images once
(`to_device`: copied into pinned host memory, then one asynchronous upload;
uint8 pixels are normalised there by the preprocess engine) and works on
`DeviceTensor`s from then on: each engine reads its inputs and writes its
outputs where `set_tensor_address` points (buffers from a pool in power-of-two
size classes, reused call after call, so once every size class has been seen
no call allocates), the rows of a batch that keep a block are gathered and scattered by
device-to-device copies (one per run of consecutive rows; a batch that runs
one graph needs none), and everything is queued on one CUDA stream. Only
`to_host` synchronises: the runtime calls it for the policy's probabilities
and for the logits, so an `infer` waits for the GPU at most twice (once with
an explicit mask; the first call also copies the preprocess constants with a
blocking copy). The parts of `latency_ms` (stem, blocks, head) time how long
the work takes to queue, not to run: the GPU's time shows in the call's
total, and in `policy` when the probabilities are waited for. Batches above an
engine profile's maximum run in chunks that read and write at offsets into
the same buffers. Every execution context runs on one activation scratch
(user-managed context memory, as large as the largest engine needs), not one
each. Device memory goes through cuda-python (`cuda.bindings.runtime`, or the
older `cuda.cudart`).
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from budget_edge.errors import BackendError, ManifestError
from budget_edge.runtime.inputs import scale_and_shift
from budget_edge.runtime.manifest import (
    GraphSpec,
    Manifest,
    Preprocessing,
    TensorRTSpec,
    read_checked,
)

# cuda-python 13 needs a CUDA 13 driver; JetPack 6 (and most desktops) have CUDA 12.
INSTALL_HINT = (
    "pip install tensorrt 'cuda-python>=12,<13' (on a Jetson, TensorRT comes with "
    "JetPack: sudo apt install nvidia-jetpack, then pip install 'cuda-python>=12,<13')"
)


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
        raise BackendError(
            f"the installed `tensorrt` has no Runtime (only type stubs?): {INSTALL_HINT}"
        )
    check_tensorrt_version(str(getattr(tensorrt, "__version__", "")))
    return tensorrt


# TensorRT 10.3 is JetPack 6.1/6.2's; 11.x removed the weakly typed API we no longer use.
SUPPORTED_TENSORRT = ((10, 3), (12, 0))  # [lowest, first unsupported)


def check_tensorrt_version(version: str) -> None:
    """One line for a TensorRT outside 10.3 to 11.x (8.x on JetPack 5, say)."""
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        raise BackendError(
            f"cannot read the TensorRT version {version!r}: {INSTALL_HINT}"
        ) from None
    low, high = SUPPORTED_TENSORRT
    if not low <= (major, minor) < high:
        raise BackendError(
            f"TensorRT {version} is not supported: budget-edge runs TensorRT "
            "10.3 (JetPack 6.1/6.2) to 11.x; on JetPack 5 (TensorRT 8.5) use "
            "--backend onnxruntime (backend='onnxruntime' in Python), "
            "or upgrade to JetPack 6"
        )


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


def bindings_version() -> str | None:
    """The installed cuda-python bindings' version (cuda-bindings from 12.6 on)."""
    from importlib import metadata

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def is_tegra() -> bool:
    """A Jetson (JetPack writes this file), where CUDA allows no runtime newer than its
    driver even within a major: desktops have minor-version compatibility, Tegra has not."""
    return Path("/etc/nv_tegra_release").exists()


def check_cuda_bindings(cudart: Any, version: str | None, tegra: bool | None = None) -> None:
    """cuda-python N talks to a CUDA N driver: a newer major than the driver fails every
    call, so say so rather than fall back to the CPU without a word. On a Jetson a newer
    minor fails too (cuda-python 12.9 links CUDA 12.9's runtime statically; JetPack 6's
    12.6 driver answers it with error 35, insufficient driver)."""
    try:
        driver = int(cuda_call(cudart.cudaDriverGetVersion()))
    except (BackendError, AttributeError, RuntimeError, OSError):
        return  # no driver to ask: the device count check reports it
    if driver <= 0:
        return  # 0: no driver loaded (not "CUDA 0.0"); the device count check says so
    driver_major, driver_minor = driver // 1000, driver % 1000 // 10
    try:
        bindings_major = int(str(version).split(".")[0])
    except ValueError:
        return
    if bindings_major > driver_major:
        raise BackendError(
            f"cuda-python {version} needs a CUDA {bindings_major} driver, but this driver "
            f"supports CUDA {driver_major}.{driver_minor}: pip install "
            f"'cuda-python>={driver_major}.{min(driver_minor, 6) if driver_major == 12 else 0},"
            f"<{driver_major + 1}' (or the budget-edge[tensorrt-cu{driver_major}] extra)"
        )
    bindings_minor = _minor(version)
    if (
        (tegra if tegra is not None else is_tegra())
        and bindings_major == driver_major
        and bindings_minor is not None
        and bindings_minor > driver_minor
    ):
        raise BackendError(
            f"cuda-python {version} brings a CUDA {bindings_major}.{bindings_minor} runtime, "
            f"newer than this Jetson's CUDA {driver_major}.{driver_minor} driver, which "
            f"Jetson does not allow: pip install 'cuda-python>={driver_major}.{driver_minor},"
            f"<{driver_major}.{driver_minor + 1}' (JetPack 6: the budget-edge[jetpack6] extra)"
        )


def _minor(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[1])
    except (IndexError, ValueError):
        return None


def tensorrt_unavailable() -> str | None:
    """Why the TensorRT backend cannot run here, or None when it can."""
    try:
        import_tensorrt()
        cudart = import_cudart()
        check_cuda_bindings(cudart, bindings_version())
        count = cuda_call(cudart.cudaGetDeviceCount())
    except BackendError as exc:
        return str(exc)
    except (RuntimeError, OSError) as exc:
        # cuda-python 12.6.x implements the runtime over the driver and raises (rather
        # than returning an error code) when it cannot load libcuda.
        return (
            f"cuda-python {bindings_version()} cannot reach the CUDA driver "
            f"({type(exc).__name__}: {exc}): check the NVIDIA driver (nvidia-smi, or "
            "tegrastats on a Jetson)"
        )
    if not count:
        return "no CUDA GPU is visible"
    return None


# ---- pure bookkeeping (tested without a GPU) ----------------------------------------


def cuda_call(result: Any) -> Any:
    """Unpack a cuda-python result tuple (error, values...); raise on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(
            f"CUDA call failed with {err!r}: check the GPU and driver (nvidia-smi / tegrastats)"
        )
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def decode_gpu_name(raw: bytes | str) -> str:
    """cudaDeviceProp.name is a NUL-padded char array."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text.split("\x00", 1)[0].strip()


def check_engine_compat(
    spec: TensorRTSpec, trt_version: str, gpu: str, compute_capability: str | None
) -> None:
    """Engines run only on the TensorRT version and GPU that built them."""
    if spec.version != trt_version:
        raise BackendError(
            f"the engines were built with TensorRT {spec.version} but TensorRT {trt_version} "
            "is installed: run `budget-edge build-engines` again on this device, or install "
            f"TensorRT {spec.version}"
        )
    if spec.gpu != gpu:
        raise BackendError(
            f"the engines were built on a {spec.gpu} but this GPU is a {gpu}: engines only "
            "run on the kind of GPU that built them; run `budget-edge build-engines` here"
        )
    if (
        spec.compute_capability is not None
        and compute_capability is not None
        and spec.compute_capability != compute_capability
    ):
        raise BackendError(
            f"the engines were built for compute capability {spec.compute_capability} but "
            f"this GPU has {compute_capability}: run `budget-edge build-engines` here"
        )


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
        raise BackendError(
            f"no TensorRT engine for graph(s) {shown}: run `budget-edge "
            "build-engines` again for this artifact"
        )


def check_io(spec: GraphSpec, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """The engine's tensors must be the graph's, by name and in order."""
    want_in = [t.name for t in spec.inputs]
    want_out = [t.name for t in spec.outputs]
    if list(inputs) != want_in or sorted(outputs) != sorted(want_out):
        raise BackendError(
            f"the engine of graph {spec.name!r} has inputs {list(inputs)} and outputs "
            f"{list(outputs)}, but the manifest says {want_in} -> {want_out}: rebuild the "
            "engines from this artifact"
        )


TENSOR_ALIGNMENT = 256  # bytes: TensorRT's requirement for every tensor address


def batch_chunks(n: int, max_batch: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of at most max_batch images covering n."""
    if max_batch < 1:
        raise BackendError(f"engine profile allows batch {max_batch}: rebuild the engines")
    return [(s, min(s + max_batch, n)) for s in range(0, n, max_batch)]


def buffer_nbytes(shape: Sequence[int | str], max_batch: int, itemsize: int) -> int:
    """Bytes of a device buffer holding max_batch rows of (batch, *shape[1:])."""
    return max_batch * math.prod(int(v) for v in shape[1:]) * itemsize


def row_runs(rows: Sequence[int]) -> list[tuple[int, int, int]]:
    """(first row, position in `rows`, length) of each run of consecutive row indices:
    one copy per run instead of one per row."""
    runs: list[tuple[int, int, int]] = []
    for pos, r in enumerate(rows):
        if runs and r == runs[-1][0] + runs[-1][2] and pos == runs[-1][1] + runs[-1][2]:
            first, at, length = runs[-1]
            runs[-1] = (first, at, length + 1)
        else:
            runs.append((int(r), pos, 1))
    return runs


def profile_max_batch(profile: Sequence[Any]) -> int:
    """Largest batch of an input's optimisation profile [min, opt, max] (of trt.Dims)."""
    if len(profile) != 3 or len(profile[2]) == 0:
        raise BackendError(
            "the engine has no optimisation profile for its batch axis: "
            "rebuild the engines with `budget-edge build-engines`"
        )
    return int(profile[2][0])


# ---- device memory ------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceTensor:
    """A (batch, ...) tensor in device memory; rows are contiguous (C-order)."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def row_nbytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_nbytes

    def at(self, row: int) -> int:
        return self.ptr + row * self.row_nbytes


RECENT_CALLS = 8  # calls whose buffers the pool keeps


class _Pool:
    """Buffers in power-of-two size classes, handed out during a call and all returned
    by `release`; the idle ones serve the next calls. Idle memory above `keep_bytes`
    (after one huge batch, say) is freed, largest first: on a Jetson the GPU shares
    the RAM."""

    def __init__(self, alloc: Any, free: Any, keep_bytes: int = 256 << 20) -> None:
        self._alloc, self._free = alloc, free
        self.keep_bytes = keep_bytes
        self._idle: dict[int, list[int]] = {}
        self._busy: list[tuple[int, int]] = []
        self._recent: deque[set[int]] = deque(maxlen=RECENT_CALLS)

    def get(self, nbytes: int) -> int:
        size = 1 << max(8, (max(nbytes, 1) - 1).bit_length())  # 256 B, 512 B, ... classes
        idle = self._idle.get(size)
        ptr = idle.pop() if idle else int(cuda_call(self._alloc(size)))
        self._busy.append((size, ptr))
        return ptr

    def release(self) -> None:
        # Buffers used by the last RECENT_CALLS calls stay, whatever keep_bytes says: a
        # model whose calls need more would otherwise free and allocate on every call
        # (and two kinds of call, alternating, would free each other's). Idle memory
        # above keep_bytes that no recent call used is freed, largest first.
        self._recent.append({ptr for _, ptr in self._busy})
        recent = set().union(*self._recent)
        for size, ptr in self._busy:
            self._idle.setdefault(size, []).append(ptr)
        self._busy.clear()
        idle = sum(size * len(ptrs) for size, ptrs in self._idle.items())
        for size in sorted(self._idle, reverse=True):
            for ptr in [p for p in self._idle[size] if p not in recent]:
                if idle <= self.keep_bytes:
                    return
                self._idle[size].remove(ptr)
                cuda_call(self._free(ptr))
                idle -= size

    def close(self) -> None:
        self.release()
        for ptrs in self._idle.values():
            for ptr in ptrs:
                cuda_call(self._free(ptr))
        self._idle.clear()


# ---- the backend --------------------------------------------------------------------


@dataclass
class _Tensor:
    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # without the batch axis


@dataclass
class _Engine:
    engine: Any
    context: Any
    inputs: list[_Tensor]
    outputs: list[_Tensor]
    max_batch: int


class TensorRTBackend:
    """Runs the artifact's TensorRT engines on the current CUDA device."""

    name = "tensorrt"
    serial = True  # one stream and pooled buffers: the runtime runs one call at a time

    def __init__(self, manifest: Manifest, directory: Path) -> None:
        if manifest.tensorrt is None:
            raise BackendError(
                "this artifact has no TensorRT engines: run `budget-edge "
                "build-engines DIR` on the target GPU"
            )
        import_tensorrt()  # a clear error when missing; then the typed import below
        import tensorrt as trt

        self._cudart = cudart = import_cudart()
        check_cuda_bindings(cudart, bindings_version())
        if not cuda_call(cudart.cudaGetDeviceCount()):
            raise BackendError(
                "no CUDA GPU is visible: use --backend onnxruntime "
                "(backend='onnxruntime' in Python)"
            )
        device = cuda_call(cudart.cudaGetDevice())
        props = cuda_call(cudart.cudaGetDeviceProperties(device))
        self.gpu = decode_gpu_name(props.name)
        self.compute_capability = f"{props.major}.{props.minor}"
        check_engine_compat(
            manifest.tensorrt, str(trt.__version__), self.gpu, self.compute_capability
        )
        check_engine_coverage(manifest)
        self._manifest = manifest
        self._dir = Path(directory)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime: trt.Runtime = trt.Runtime(self._logger)
        self._stream = cuda_call(cudart.cudaStreamCreate())
        self._queued = False  # work on the stream since its last synchronisation
        self._engines: dict[str, _Engine] = {}
        self._device = _Pool(cudart.cudaMalloc, cudart.cudaFree)
        self._pinned = _Pool(cudart.cudaMallocHost, cudart.cudaFreeHost)
        kinds = cudart.cudaMemcpyKind
        self._h2d, self._d2h = kinds.cudaMemcpyHostToDevice, kinds.cudaMemcpyDeviceToHost
        self._d2d = kinds.cudaMemcpyDeviceToDevice
        # For `run` and `load` from other threads; `infer` is serialised by the runtime.
        self._lock = threading.RLock()
        # The preprocess engine and its per-channel constants, made on first use.
        self._prep: tuple[_Engine, int, int] | None = None
        self._const: list[int] = []
        # One activation scratch for every execution context (see _context).
        self._scratch, self._scratch_size = 0, 0
        self._retired: list[int] = []  # scratch buffers replaced by a larger one

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
        file = self._manifest.tensorrt.engines[graph]
        path = self._dir / file
        engine = self._runtime.deserialize_cuda_engine(
            read_checked(self._dir, self._manifest, file)
        )
        if engine is None:
            raise ManifestError(
                f"TensorRT could not deserialise {path}: rebuild the engines "
                "on this device with `budget-edge build-engines`"
            )
        context = self._context(engine)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        check_io(spec, ins, outs)
        max_batch = profile_max_batch(engine.get_tensor_profile_shape(ins[0], 0))
        shapes = {t.name: tuple(int(v) for v in t.shape[1:]) for t in [*spec.inputs, *spec.outputs]}

        def tensor(name: str) -> _Tensor:
            return _Tensor(name, np.dtype(trt.nptype(engine.get_tensor_dtype(name))), shapes[name])

        order = {t.name: i for i, t in enumerate(spec.outputs)}
        return _Engine(
            engine,
            context,
            [tensor(n) for n in ins],
            sorted((tensor(n) for n in outs), key=lambda t: order[t.name]),
            max_batch,
        )

    def _context(self, engine: Any) -> Any:
        """An execution context on the backend's one activation scratch.

        By default each context allocates its own activation memory, so an artifact of
        40 engines holds 40 of them; one stream runs one engine at a time, so one
        buffer, as large as the largest engine needs, serves all (what an 8 GB Jetson
        sharing its RAM with the GPU wants). It grows when an engine needs more, and
        every context is pointed at the new one.
        """
        import tensorrt as trt

        new = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        need = int(engine.device_memory_size_v2)
        if need > self._scratch_size:
            if self._scratch and self._queued:
                # Engines queued on the stream may still use it: freed at `release`,
                # which waits for the stream, rather than waiting here.
                self._retired.append(self._scratch)
            elif self._scratch:
                cuda_call(self._cudart.cudaFree(self._scratch))  # nothing queued uses it
            self._scratch = int(cuda_call(self._cudart.cudaMalloc(need)))
            self._scratch_size = need
            for context in self._contexts():
                context.set_device_memory(self._scratch, self._scratch_size)
        new.set_device_memory(self._scratch, self._scratch_size)
        return new

    def _contexts(self) -> list[Any]:
        engines = [*self._engines.values(), *([self._prep[0]] if self._prep else [])]
        return [e.context for e in engines]

    def load(self, graphs: Sequence[str]) -> None:
        """Deserialise these engines, and the preprocess engine, now rather than on first
        use."""
        with self._lock:
            for g in graphs:
                self._engine(g)
            spec = self._manifest.tensorrt
            if spec is not None and spec.preprocess is not None:
                self._preprocess_engine(spec.preprocess, self._manifest.preprocessing)

    # ---- tensors on the device ---------------------------------------------------

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> DeviceTensor:
        dt = np.dtype(dtype)
        nbytes = math.prod(shape) * dt.itemsize
        return DeviceTensor(self._device.get(nbytes), tuple(shape), dt)

    def to_device(self, array: np.ndarray) -> DeviceTensor:
        """Stage in pinned memory and upload asynchronously (the staging buffer stays
        reserved until `release`, after the synchronisation that follows)."""
        host = np.ascontiguousarray(array)
        pinned = self._pinned.get(host.nbytes)
        ctypes.memmove(pinned, host.ctypes.data, host.nbytes)
        out = self.empty(host.shape, host.dtype)
        self._copy(out.ptr, pinned, host.nbytes, self._h2d)
        return out

    def to_host(self, tensors: Sequence[DeviceTensor]) -> list[np.ndarray]:
        """Download into pinned memory, synchronise once, copy out as float32."""
        staged = []
        for t in tensors:
            pinned = self._pinned.get(t.nbytes)
            self._copy(pinned, t.ptr, t.nbytes, self._d2h)
            staged.append((pinned, t))
        self.synchronize()
        out = []
        for pinned, t in staged:
            host = np.empty(t.shape, t.dtype)
            ctypes.memmove(host.ctypes.data, pinned, t.nbytes)
            out.append(host if host.dtype == np.float32 else host.astype(np.float32))
        return out

    def take(self, source: DeviceTensor, rows: np.ndarray) -> DeviceTensor:
        """The rows of `source`, gathered on the device."""
        out = self.empty((len(rows), *source.shape[1:]), source.dtype)
        for first, at, length in row_runs(rows.tolist()):
            self._copy(out.at(at), source.at(first), length * source.row_nbytes, self._d2d)
        return out

    def put(self, dst: DeviceTensor, rows: np.ndarray, src: DeviceTensor) -> DeviceTensor:
        """Scatter the rows of `src` into those rows of `dst`, on the device (in place)."""
        for first, at, length in row_runs(rows.tolist()):
            self._copy(dst.at(first), src.at(at), length * dst.row_nbytes, self._d2d)
        return dst

    def release(self) -> None:
        """The call is over: buffers may be reused. After a call that failed half-way
        (work still queued on the stream), wait for that work first, so that no
        buffer is handed out, or freed, while a copy or an engine may still use it."""
        try:
            if self._queued:
                self.synchronize()
        finally:  # a sticky CUDA error must not also leak every buffer of the call
            self._device.release()
            self._pinned.release()
            while self._retired:
                cuda_call(self._cudart.cudaFree(self._retired.pop()))

    def synchronize(self) -> None:
        cuda_call(self._cudart.cudaStreamSynchronize(self._stream))
        self._queued = False

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any) -> None:
        if nbytes:
            cuda_call(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream))
            self._queued = True

    def upload_pixels(self, pixels: np.ndarray, pre: Preprocessing) -> DeviceTensor | None:
        """uint8 NHWC pixels up (a quarter of float32's bytes), normalised into the NCHW
        image by the preprocess engine; None when the engines predate it."""
        spec = self._manifest.tensorrt
        if spec is None or spec.preprocess is None:
            return None
        e, scale, shift = self._preprocess_engine(spec.preprocess, pre)
        n = pixels.shape[0]
        c, h, w = pre.input_size
        src = self.to_device(pixels)
        out = self.empty((n, c, h, w))
        for start, stop in batch_chunks(n, e.max_batch):
            if not e.context.set_input_shape("pixels", (stop - start, h, w, c)):
                raise BackendError(
                    f"the preprocess engine rejects {(stop - start, h, w, c)} "
                    "pixels: rebuild the engines for this input size"
                )
            self._set_address(e, "pixels", self._chunk(src, start, stop, copy_in=True))
            for name, ptr in (("scale", scale), ("shift", shift)):
                e.context.set_input_shape(name, (1, c, 1, 1))
                self._set_address(e, name, ptr)
            image = self._chunk(out, start, stop, copy_in=False)
            self._set_address(e, "image", image)
            self._queued = True
            if not e.context.execute_async_v3(int(self._stream)):
                raise BackendError("TensorRT failed to run the preprocess engine")
            if image != out.at(start):
                self._copy(out.at(start), image, (stop - start) * out.row_nbytes, self._d2d)
        return out

    def _preprocess_engine(self, file: str, pre: Preprocessing) -> tuple[_Engine, int, int]:
        if self._prep is None:
            path = self._dir / file
            engine = self._runtime.deserialize_cuda_engine(
                read_checked(self._dir, self._manifest, file)
            )
            if engine is None:
                raise ManifestError(
                    f"TensorRT could not deserialise {path}: rebuild the "
                    "engines on this device with `budget-edge build-engines`"
                )
            max_batch = profile_max_batch(engine.get_tensor_profile_shape("pixels", 0))
            loaded = _Engine(engine, self._context(engine), [], [], max_batch)
            # The constants live as long as the backend: their own buffers, copied once.
            consts = []
            for value in scale_and_shift(pre):
                ptr = int(cuda_call(self._cudart.cudaMalloc(value.nbytes)))
                self._const.append(ptr)
                cuda_call(self._cudart.cudaMemcpy(ptr, value.ctypes.data, value.nbytes, self._h2d))
                consts.append(ptr)
            self._prep = (loaded, consts[0], consts[1])
        return self._prep

    # ---- running engines -----------------------------------------------------------

    def run_device(self, graph: str, inputs: Sequence[DeviceTensor]) -> list[DeviceTensor]:
        """Queue the engine on the stream, reading `inputs` in place; outputs in new
        pooled buffers. Batches above the profile run as chunks at offsets."""
        e = self._engine(graph)
        n = inputs[0].shape[0]
        outs = [self.empty((n, *t.shape), t.dtype) for t in e.outputs]
        for start, stop in batch_chunks(n, e.max_batch):
            copy_back: list[tuple[int, DeviceTensor]] = []
            for t, x in zip(e.inputs, inputs, strict=True):
                if x.dtype != t.dtype:
                    raise BackendError(
                        f"engine of {graph} takes {t.dtype} for {t.name!r}, "
                        f"given {x.dtype}: rebuild the engines"
                    )
                if not e.context.set_input_shape(t.name, (stop - start, *x.shape[1:])):
                    raise BackendError(
                        f"engine of {graph} rejects input shape "
                        f"{(stop - start, *x.shape[1:])}: rebuild the engines "
                        "for this input size"
                    )
                self._set_address(e, t.name, self._chunk(x, start, stop, copy_in=True))
            for t, o in zip(e.outputs, outs, strict=True):
                address = self._chunk(o, start, stop, copy_in=False)
                self._set_address(e, t.name, address)
                if address != o.at(start):  # written to an aligned copy: move it into place
                    copy_back.append(
                        (o.at(start), DeviceTensor(address, (stop - start, *o.shape[1:]), o.dtype))
                    )
            self._queued = True
            if not e.context.execute_async_v3(int(self._stream)):
                raise BackendError(f"TensorRT failed to run the engine of {graph}")
            for destination, staged in copy_back:
                self._copy(destination, staged.ptr, staged.nbytes, self._d2d)
        return outs

    def _chunk(self, tensor: DeviceTensor, start: int, stop: int, copy_in: bool) -> int:
        """The device address of rows [start, stop) of `tensor` for an engine.

        TensorRT takes only 256-byte aligned tensor addresses. A whole pooled buffer is
        (cudaMalloc aligns); a chunk at an offset often is not (rows of 40 bytes of
        logits, 784 of 28x28 pixels): it runs from an aligned pooled copy instead,
        copied in for an input, copied back by the caller for an output.
        """
        address = tensor.at(start)
        if address % TENSOR_ALIGNMENT == 0:
            return address
        staged = self.empty((stop - start, *tensor.shape[1:]), tensor.dtype)
        if copy_in:
            self._copy(staged.ptr, address, staged.nbytes, self._d2d)
        return staged.ptr

    @staticmethod
    def _set_address(e: _Engine, name: str, address: int) -> None:
        if e.context.set_tensor_address(name, address) is False:
            raise BackendError(f"TensorRT refused the address of tensor {name!r}")

    def run(self, graph: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Host arrays in, host arrays out: one graph, one synchronisation."""
        with self._lock:
            try:
                expected = [t.dtype for t in self._engine(graph).inputs]
                staged = [
                    self.to_device(np.asarray(a, dt))
                    for a, dt in zip(inputs, expected, strict=True)
                ]
                return self.to_host(self.run_device(graph, staged))
            finally:
                self.release()

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self.synchronize()
            self._engines.clear()
            self._prep = None
            for ptr in self._const:
                cuda_call(self._cudart.cudaFree(ptr))
            self._const.clear()
            for ptr in [*self._retired, *([self._scratch] if self._scratch else [])]:
                cuda_call(self._cudart.cudaFree(ptr))
            self._retired.clear()
            self._scratch, self._scratch_size = 0, 0
            self._device.close()
            self._pinned.close()
            if self._stream is not None:
                cuda_call(self._cudart.cudaStreamDestroy(self._stream))
                self._stream = None
