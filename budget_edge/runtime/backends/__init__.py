"""Inference backends: run one graph of the artifact directory on a batch.

A backend knows nothing about masks or blocks. The runtime hands it opaque
tensors that the backend owns (numpy arrays for ONNX Runtime on the CPU,
device buffers for TensorRT) and asks for the few operations a masked forward
pass needs, so activations stay where they live between graphs:

    to_device(array)      host array in (once per call: the images, the budgets)
    run_device(g, ts)     run graph g on backend tensors, outputs stay put
    take(t, rows)         the rows of t (the images of a batch that keep a block)
    put(dst, rows, src)   dst with src written into those rows (in place where the
                          backend can; use the returned tensor)
    empty(shape)          an uninitialised float32 tensor (the batch's logits)
    to_host(ts)           back to numpy, with one synchronisation for all of them
    release()             the call is over: temporary device memory may be reused
    upload_pixels(u8)     uint8 NHWC pixels normalised where the tensors live (a quarter
                          of the bytes of float32 to upload), or None: the runtime then
                          normalises on the host

`run(g, arrays)` is the host-level shortcut (to_device, run_device, to_host)
for single graphs. Backends import their engine (onnxruntime, tensorrt) only
when created, so the runtime imports with neither installed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from budget_edge.errors import BackendError, ConfigError
from budget_edge.runtime.manifest import Manifest, Preprocessing

BACKENDS = ("auto", "onnxruntime", "tensorrt")


class Backend(Protocol):
    """What the runtime needs from an inference engine (see the module docstring)."""

    name: str

    def run(self, graph: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run graph `graph` on host arrays (inputs in manifest order); host outputs."""
        ...

    def run_device(self, graph: str, inputs: Sequence[Any]) -> list[Any]:
        """Run graph `graph` on backend tensors; its outputs stay backend tensors."""
        ...

    def to_device(self, array: np.ndarray) -> Any: ...

    def to_host(self, tensors: Sequence[Any]) -> list[np.ndarray]: ...

    def take(self, tensor: Any, rows: np.ndarray) -> Any: ...

    def put(self, dst: Any, rows: np.ndarray, src: Any) -> Any: ...

    def empty(self, shape: tuple[int, ...]) -> Any: ...

    def release(self) -> None: ...

    def upload_pixels(self, pixels: np.ndarray, pre: Preprocessing) -> Any | None: ...

    def close(self) -> None:
        """Release sessions, engines and device memory."""
        ...


class HostTensors:
    """The tensor operations of a backend whose tensors are numpy arrays on the host
    (ONNX Runtime on the CPU): no copies, no synchronisation. Subclasses define
    `run`; `run_device` is the same call."""

    name = "host"

    def run(self, graph: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def run_device(self, graph: str, inputs: Sequence[Any]) -> list[Any]:
        return self.run(graph, inputs)

    def to_device(self, array: np.ndarray) -> np.ndarray:
        return array

    def to_host(self, tensors: Sequence[Any]) -> list[np.ndarray]:
        return [np.asarray(t, np.float32) for t in tensors]

    def take(self, tensor: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return tensor[rows]

    def put(self, dst: np.ndarray, rows: np.ndarray, src: np.ndarray) -> np.ndarray:
        dst[rows] = src
        return dst

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.empty(shape, np.float32)

    def release(self) -> None:
        pass

    def upload_pixels(self, pixels: np.ndarray, pre: Preprocessing) -> Any | None:
        return None  # numpy normalises on the host already: nothing to gain


def create_backend(
    name: str,
    manifest: Manifest,
    directory: Path,
    threads: int | None = None,
    providers: Sequence[Any] | None = None,
) -> Backend:
    """Build the backend `name`; "auto" picks TensorRT when the manifest has engines
    and TensorRT can run here, else ONNX Runtime."""
    if name not in BACKENDS:
        raise ConfigError(f"backend {name!r} is not one of {BACKENDS}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    if name == "auto":
        name = "onnxruntime"
        if manifest.tensorrt is not None:
            from budget_edge.runtime.backends.tensorrt_backend import tensorrt_unavailable

            why = tensorrt_unavailable()
            if why is None:
                name = "tensorrt"
            else:  # engines were built for this device: falling back is worth a word
                warnings.warn(
                    f"the artifact has TensorRT engines but TensorRT cannot run "
                    f"here ({why}); running the ONNX graphs with ONNX Runtime",
                    RuntimeWarning,
                    stacklevel=3,
                )
    if name == "tensorrt":
        if manifest.tensorrt is None:
            raise BackendError(
                "this artifact has no TensorRT engines: run `budget-edge "
                "build-engines DIR` on the target GPU, or use "
                "--backend onnxruntime (backend='onnxruntime' in Python)"
            )
        from budget_edge.runtime.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(manifest, directory)
    from budget_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(manifest, directory, threads=threads, providers=providers)
