"""Stand-ins for `tensorrt` and cuda-python's `cudart`, for tests on machines without a GPU.

They follow the TensorRT 10/11 call protocol the backend relies on (tensor
names and modes, optimisation profile, set_input_shape / set_tensor_address /
execute_async_v3) and check it: an engine refuses a batch above its profile
and any other C/H/W than its graph's, runs only once every tensor has an
address, and reads and writes only inside allocated buffers; a foreign engine
file does not deserialise. "Device" memory is host memory (FakeCudart), and
work on a stream is really asynchronous: copies and engine runs are queued
and happen at cudaStreamSynchronize, in order, so reading a result before the
synchronisation, or freeing or reusing a host buffer a queued copy still
needs, gives wrong numbers or fails. FakeCudart counts host copies and
synchronisations. An engine file is a small JSON naming the ONNX graph, which
ONNX Runtime executes on the host (reading and writing the engine's buffers:
FakeCudart's, or real device buffers through cuda-python with DeviceMemory on
a GPU machine). This exercises the backend's bookkeeping, never TensorRT.
"""

from __future__ import annotations

import ctypes
import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

ALIGNMENT = 256  # bytes: cudaMalloc gives it, TensorRT requires it of tensor addresses


class FakeCudart:
    """Host-memory imitation of the cuda-python runtime calls the backend uses."""

    cudaMemcpyKind = types.SimpleNamespace(
        cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3
    )

    def __init__(
        self, gpu: bytes = b"Fake GPU\x00\x00\x00", cc: tuple[int, int] = (8, 7), devices: int = 1
    ) -> None:
        self.gpu, self.cc, self.devices = gpu, cc, devices
        self.driver = 12060  # CUDA 12.6, JetPack 6 (0: no driver loaded, as the runtime says)
        self.no_libcuda = False  # True: cuda-python 12.6.x's RuntimeError for every call
        self.buffers: dict[int, ctypes.Array[ctypes.c_char]] = {}  # device memory
        self.pinned: dict[int, ctypes.Array[ctypes.c_char]] = {}  # page-locked host memory
        self.freed: list[int] = []
        self._raw: dict[int, Any] = {}  # what keeps each aligned buffer alive
        self.streams = 0
        self.queue: list[Any] = []  # work queued on the stream, run at synchronisation
        self.counts = {"h2d": 0, "d2h": 0, "d2d": 0, "sync": 0, "malloc": 0}

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        if self.no_libcuda:  # cuda-python 12.6.x over the driver API, without libcuda
            raise RuntimeError("Failed to dlopen libcuda.so.1")
        return (0, self.devices)

    def cudaDriverGetVersion(self) -> tuple[int, int]:
        if self.no_libcuda:
            raise RuntimeError("Failed to dlopen libcuda.so.1")
        return (0, self.driver)

    def cudaGetDevice(self) -> tuple[int, int]:
        return (0, 0)

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, Any]:
        return (0, types.SimpleNamespace(name=self.gpu, major=self.cc[0], minor=self.cc[1]))

    def cudaStreamCreate(self) -> tuple[int, int]:
        self.streams += 1
        return (0, 1000 + self.streams)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        self.streams -= 1
        return (0,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        self.counts["sync"] += 1
        queued, self.queue = self.queue, []
        for work in queued:
            work()
        return (0,)

    def _alloc(self, table: dict[int, Any], nbytes: int) -> tuple[int, int]:
        # As cudaMalloc: 256-byte aligned (TensorRT relies on it for tensor addresses).
        raw = ctypes.create_string_buffer(nbytes + ALIGNMENT)
        ptr = -(-ctypes.addressof(raw) // ALIGNMENT) * ALIGNMENT
        table[ptr] = (ctypes.c_char * nbytes).from_address(ptr)
        self._raw[ptr] = raw
        self.counts["malloc"] += 1
        return (0, ptr)

    def _release(self, table: dict[int, Any], ptr: int) -> tuple[int]:
        assert not self.queue, "memory freed while work on the stream may still use it"
        del table[ptr]
        del self._raw[ptr]
        self.freed.append(ptr)
        return (0,)

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        return self._alloc(self.buffers, nbytes)

    def cudaFree(self, ptr: int) -> tuple[int]:
        return self._release(self.buffers, ptr)

    def cudaMallocHost(self, nbytes: int) -> tuple[int, int]:
        return self._alloc(self.pinned, nbytes)

    def cudaFreeHost(self, ptr: int) -> tuple[int]:
        return self._release(self.pinned, ptr)

    def size_of(self, ptr: int) -> int:
        return len(self.buffers[ptr])

    @staticmethod
    def _inside(table: dict[int, Any], ptr: int, count: int) -> bool:
        return any(base <= ptr and ptr + count <= base + len(buf) for base, buf in table.items())

    def cudaMemcpy(self, dst: int, src: int, count: int, kind: int) -> tuple[int]:
        """Blocking, from or to pageable host memory too; after the stream's queued work,
        like the legacy default stream."""
        device = dst if kind == 1 else src
        assert self._inside(self.buffers, device, count), "blocking copy outside a buffer"
        queued, self.queue = self.queue, []
        for work in queued:
            work()
        ctypes.memmove(dst, src, count)
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: int, stream: int) -> tuple[int]:
        where = {
            1: (self.pinned, self.buffers, "h2d"),
            2: (self.buffers, self.pinned, "d2h"),
            3: (self.buffers, self.buffers, "d2d"),
        }
        src_table, dst_table, name = where[kind]
        assert self._inside(src_table, src, count), f"{name} copy reads outside a buffer"
        assert self._inside(dst_table, dst, count), f"{name} copy writes outside a buffer"
        self.counts[name] += 1

        def copy() -> None:
            # Pinned memory freed before this runs is caught in _release.
            ctypes.memmove(dst, src, count)

        self.queue.append(copy)
        return (0,)

    def enqueue(self, work: Any) -> None:
        self.queue.append(work)

    # -- what the stand-in engines use to reach "device" memory
    def read(self, ptr: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        dt = np.dtype(dtype)
        count = int(np.prod(shape))
        assert self._inside(self.buffers, ptr, count * dt.itemsize), "input read past its buffer"
        raw = (ctypes.c_char * (count * dt.itemsize)).from_address(ptr)
        return np.frombuffer(bytes(raw), dt).reshape(shape).copy()

    def write(self, ptr: int, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value)  # the bytes in C order, whatever the strides
        assert self._inside(self.buffers, ptr, value.nbytes), "output overflow"
        ctypes.memmove(ptr, value.ctypes.data, value.nbytes)


class DeviceMemory:
    """Engine access to real device buffers through cuda-python (for a GPU machine).
    Engines run at once (blocking copies), after the stream's earlier work."""

    def __init__(self, cudart: Any) -> None:
        self.cudart = cudart

    def enqueue(self, work: Any) -> None:
        work()

    def read(self, ptr: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        host = np.empty(shape, dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        err, *_ = self.cudart.cudaMemcpy(host.ctypes.data, ptr, host.nbytes, kind)
        assert int(err) == 0, err
        return host

    def write(self, ptr: int, value: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        err, *_ = self.cudart.cudaMemcpy(ptr, value.ctypes.data, value.nbytes, kind)
        assert int(err) == 0, err


class _Context:
    def __init__(self, engine: _Engine, strategy: str) -> None:
        self.engine = engine
        self.strategy = strategy
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.scratch: tuple[int, int] | None = None  # (address, size) given by the caller
        self.runs = 0

    def set_device_memory(self, memory: int, size: int) -> None:
        """As TensorRT 10.1+: only for a USER_MANAGED context; the memory must be 256-byte
        aligned and at least device_memory_size_v2. (TensorRT logs an error and keeps no
        memory; the next execute then fails.)"""
        assert self.strategy == "USER_MANAGED", "set_device_memory on a context with its own"
        ok = memory % ALIGNMENT == 0 and size >= self.engine.device_memory_size_v2
        self.scratch = (memory, size) if ok else None

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if shape[0] > self.engine.max_batch or shape[0] < 1:
            return False
        want = self.engine.input_shapes[name]
        if any(isinstance(w, int) and w != s for w, s in zip(want, shape[1:], strict=True)):
            return False  # only the batch axis (and the graph's symbolic axes) may vary
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if ptr % ALIGNMENT:  # TensorRT refuses it (and would fault if it took it)
            self.addresses.pop(name, None)
            return False
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        e = self.engine
        assert isinstance(stream_handle, int)
        assert set(self.addresses) == set(e.inputs) | set(e.outputs), "tensor without address"
        if self.strategy == "USER_MANAGED":
            if self.scratch is None:
                return False  # TensorRT: no device memory set for this context
            address, size = self.scratch
            # The scratch must still be allocated, and as large as it was said to be (a
            # real GPU's memory, in the device check, is not tracked here).
            if isinstance(e.memory, FakeCudart):
                assert address in e.memory.buffers, "context memory was freed"
                assert e.memory.size_of(address) >= size, "context memory is too small"
        addresses, shapes = dict(self.addresses), dict(self.shapes)  # as they are now

        def run() -> None:
            feeds = {
                name: e.memory.read(addresses[name], shapes[name], e.dtypes[name])
                for name in e.inputs
            }
            outputs = e.session.run(e.outputs, feeds)
            for name, value in zip(e.outputs, outputs, strict=True):
                e.memory.write(addresses[name], np.ascontiguousarray(value, np.float32))

        e.memory.enqueue(run)
        self.runs += 1
        return True


class _Engine:
    def __init__(self, spec: dict[str, Any], root: Path, memory: Any) -> None:
        self.session = ort.InferenceSession(
            str(root / spec["onnx"]), providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.input_shapes = {i.name: tuple(i.shape[1:]) for i in self.session.get_inputs()}
        self.dtypes = {
            i.name: np.uint8 if i.type == "tensor(uint8)" else np.float32
            for i in self.session.get_inputs()
        }
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.max_batch = int(spec["max_batch"])
        # Activation scratch an execution context needs: more for larger batches.
        self.device_memory_size_v2 = int(spec.get("scratch_bytes", 4096 * self.max_batch))
        self.onnx = spec["onnx"]
        self.memory = memory
        self.contexts: list[_Context] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, i: int) -> str:
        return [*self.inputs, *self.outputs][i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name in self.inputs else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return "UINT8" if self.dtypes.get(name) == np.uint8 else "FLOAT"

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[list[int]]:
        return [[1], [self.max_batch], [self.max_batch]]

    def create_execution_context(self, strategy: str = "STATIC") -> _Context:
        self.contexts.append(_Context(self, strategy))
        return self.contexts[-1]


def make_fake_tensorrt(root: Path, memory: Any, version: str = "10.3.0") -> types.ModuleType:
    """A `tensorrt` module whose engines are JSON files {"onnx": ..., "max_batch": ...}.

    memory: FakeCudart (host memory) or DeviceMemory (a real GPU's buffers)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")  # type: ignore[attr-defined]
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(  # type: ignore[attr-defined]
        STATIC="STATIC", ON_PROFILE_CHANGE="ON_PROFILE_CHANGE", USER_MANAGED="USER_MANAGED"
    )
    trt.nptype = lambda dtype: {"FLOAT": np.float32, "UINT8": np.uint8}[dtype]  # type: ignore[attr-defined]
    engines: list[_Engine] = []
    trt.engines = engines  # type: ignore[attr-defined]

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> _Engine | None:
            try:
                spec = json.loads(data)
            except ValueError:
                return None  # what TensorRT does with a foreign or corrupt engine
            engines.append(_Engine(spec, root, memory))
            return engines[-1]

    trt.Logger = Logger  # type: ignore[attr-defined]
    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt
