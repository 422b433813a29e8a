"""The few CUDA runtime calls the engine builder needs, through cuda-python.

TensorRT does not say which GPU it runs on, and INT8 calibration hands it
device pointers, so we need the CUDA runtime: the GPU's name and compute
capability for the manifest (engines only run on the kind of GPU that built
them) and plain device buffers for calibration batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from budget_edge.errors import BackendError
from budget_edge.runtime.backends.tensorrt_backend import decode_gpu_name

INSTALL_HINT = (
    "install cuda-python (`pip install cuda-python`, or `pip install 'budget-edge[tensorrt]'`); "
    "on a Jetson use the wheel matching the JetPack CUDA version"
)


def cudart() -> ModuleType:
    """The cuda-python runtime module (new layout first, then the pre-12.6 one)."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as legacy

        return legacy
    except ImportError as exc:
        raise BackendError(f"cuda-python is not installed: {INSTALL_HINT}") from exc


def _check(rt: ModuleType, result: tuple[Any, ...], call: str) -> tuple[Any, ...]:
    """cuda-python returns (error, values...); raise on anything but success."""
    err = result[0]
    if err != rt.cudaError_t.cudaSuccess:
        raise BackendError(f"CUDA call {call} failed with {err}: check the driver and the GPU")
    return result[1:]


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7" on Jetson Orin


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of the GPU that builds the engines."""
    rt = cudart()
    (prop,) = _check(rt, rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    # The runtime's decoding, so the names compared at load time are spelt alike.
    return GpuInfo(name=decode_gpu_name(prop.name), compute_capability=f"{prop.major}.{prop.minor}")


class DeviceBuffer:
    """One cudaMalloc'd buffer, filled from host arrays of at most `nbytes`."""

    def __init__(self, nbytes: int) -> None:
        self._rt = cudart()
        (self.ptr,) = _check(self._rt, self._rt.cudaMalloc(nbytes), "cudaMalloc")
        self.nbytes = nbytes

    def upload(self, array: np.ndarray) -> int:
        """Copy a host array in; return the device pointer as TensorRT wants it."""
        host = np.ascontiguousarray(array)
        if host.nbytes > self.nbytes:
            raise BackendError(f"calibration batch of {host.nbytes} bytes exceeds its buffer")
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self._rt, self._rt.cudaMemcpy(self.ptr, host.ctypes.data, host.nbytes, kind),
               "cudaMemcpy")
        return int(self.ptr)

    def free(self) -> None:
        if self.ptr is not None:
            _check(self._rt, self._rt.cudaFree(self.ptr), "cudaFree")
            self.ptr = None
