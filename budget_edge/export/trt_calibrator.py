"""INT8 entropy calibration for one graph, fed from numpy batches.

TensorRT 10 still runs implicit-quantisation calibration (deprecated since
10.1 in favour of explicit Q/DQ graphs, but it is what JetPack 6's
TensorRT 10.3 and trtexec --int8 use). Imports tensorrt: load lazily.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import tensorrt as trt

from budget_edge.export.cuda_device import DeviceBuffer


class ArrayCalibrator(trt.IInt8EntropyCalibrator2):
    """Hands TensorRT fixed-size batches of a graph's inputs, then caches the scales.

    `batches` yields {input name: float32 array (batch_size, ...)}; a short last
    batch is dropped because TensorRT calibrates at one batch size. With a cache
    file present TensorRT reads the scales from it and asks for no batches.
    """

    def __init__(
        self,
        batches: Iterable[Mapping[str, np.ndarray]],
        batch_size: int,
        cache_path: Path,
    ) -> None:
        trt.IInt8EntropyCalibrator2.__init__(self)
        self._batches: Iterator[Mapping[str, np.ndarray]] = iter(batches)
        self._batch_size = batch_size
        self._cache_path = cache_path
        self._buffers: dict[str, DeviceBuffer] = {}

    def get_batch_size(self) -> int:
        return self._batch_size

    def get_batch(self, names: list[str]) -> list[int]:
        for batch in self._batches:
            if all(batch[name].shape[0] == self._batch_size for name in names):
                return [self._upload(name, batch[name]) for name in names]
        return []  # no more data: TensorRT computes the scales now

    def _upload(self, name: str, array: np.ndarray) -> int:
        host = np.ascontiguousarray(array, dtype=np.float32)
        if name not in self._buffers:
            self._buffers[name] = DeviceBuffer(host.nbytes)
        return self._buffers[name].upload(host)

    def read_calibration_cache(self) -> bytes | None:
        if self._cache_path.is_file():
            return self._cache_path.read_bytes()
        return None

    def write_calibration_cache(self, cache: memoryview | bytes) -> None:
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_path.with_name(self._cache_path.name + ".tmp")
        tmp.write_bytes(bytes(cache))
        os.replace(tmp, self._cache_path)

    def free(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers.clear()
