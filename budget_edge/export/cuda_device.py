"""The one CUDA runtime call the engine builder needs, through cuda-python.

TensorRT does not say which GPU it runs on, so the CUDA runtime gives the
GPU's name and compute capability for the manifest (engines only run on the
kind of GPU that built them).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from budget_edge.errors import BackendError
from budget_edge.runtime.backends.tensorrt_backend import decode_gpu_name

INSTALL_HINT = (
    "install cuda-python 12 (`pip install 'cuda-python>=12,<13'`, or `pip install "
    "'budget-edge[tensorrt]'`): cuda-python 13 needs a CUDA 13 driver, and JetPack 6 has CUDA 12"
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
