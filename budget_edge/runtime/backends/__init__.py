"""Inference backends: run one graph of the artifact directory on a batch.

A backend knows nothing about masks or blocks: the runtime asks it to run a
named graph on host (numpy) inputs and gets host outputs back. Backends import
their engine (onnxruntime, tensorrt) only when created, so the runtime imports
with neither installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from budget_edge.errors import BackendError, ConfigError
from budget_edge.runtime.manifest import Manifest

BACKENDS = ("auto", "onnxruntime", "tensorrt")


class Backend(Protocol):
    """What the runtime needs from an inference engine."""

    name: str

    def run(self, graph: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run graph `graph` on float32 host arrays (inputs in manifest order)."""
        ...

    def close(self) -> None:
        """Release sessions, engines and device memory."""
        ...


def create_backend(name: str, manifest: Manifest, directory: Path, threads: int | None = None,
                   providers: Sequence[Any] | None = None) -> Backend:
    """Build the backend `name`; "auto" picks TensorRT when the manifest has engines
    and TensorRT can run here, else ONNX Runtime."""
    if name not in BACKENDS:
        raise ConfigError(f"backend {name!r} is not one of {BACKENDS}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    if name == "auto":
        name = "onnxruntime"
        if manifest.tensorrt is not None:
            from budget_edge.runtime.backends.tensorrt_backend import tensorrt_unavailable

            if tensorrt_unavailable() is None:
                name = "tensorrt"
    if name == "tensorrt":
        if manifest.tensorrt is None:
            raise BackendError("this artifact has no TensorRT engines: run `budget-edge "
                               "build-engines DIR` on the target GPU, or use "
                               "backend='onnxruntime'")
        from budget_edge.runtime.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(manifest, directory)
    from budget_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(manifest, directory, threads=threads, providers=providers)
