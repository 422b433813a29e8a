"""One copy of each weight for all of an artifact's ONNX Runtime sessions on the CPU.

Every graph of an artifact holds its own weights: a whole-mask graph repeats
the blocks it keeps, the static graph all of them, a block graph its own. A
session per graph keeps its own copy, after ONNX Runtime's optimisations
(the CPU provider reorders conv filters into its blocked NCHWc layout).
ResNet-20 with the whole-mask graphs of its count masks: 6.2 MB of weights
in 11 graphs, 1.1 MB distinct. Mode allocate runs another graph nearly every
image, and a graph whose copy has left the L2 cache is slower: round robin
over six sessions of one ResNet-20 graph cost 11-13% more per call than one
session, 4% with the weights shared (`benchmarks/investigations/shared_weights.py`,
benchmarks/results/shared-weights/ and runtime-findings.md, section 9).

So a session is made in two steps. ONNX Runtime optimises the graph once and
writes the optimised model to a private temporary folder; the session is
then made from that model with optimisations off, every raw initializer
handed over with `SessionOptions.add_initializer` from a pool keyed by
content, so equal tensors of different graphs are one buffer. The buffers are
64-byte aligned like ONNX Runtime's own (the blocked conv kernels read them in
64-byte rows).
The optimised model's initializers are read from its protobuf
(`onnx_wire.raw_initializers`): the runtime does not need the onnx package.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from budget_edge.runtime.onnx_wire import (
    RawInitializer,
    external_tensors,
    has_subgraphs,
    raw_initializers,
)

ALIGNMENT = 64  # bytes, as ONNX Runtime's CPU allocator aligns

# TensorProto.DataType -> numpy dtype, for what ONNX Runtime keeps as raw bytes.
_NUMPY = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}


class WeightPool:
    """Distinct initializers by content, each an aligned buffer and its OrtValue. The
    buffers live as long as the pool: sessions made from it must not outlive it (their
    weights would be freed memory; a session does not keep them alive). Not thread-safe
    on its own: the backend makes sessions under its lock."""

    def __init__(self, ort: Any) -> None:
        self._ort = ort
        self._values: dict[tuple[int, tuple[int, ...], bytes], Any] = {}
        self._buffers: list[np.ndarray] = []
        self.total_bytes = 0  # what the sessions would hold each on their own
        self.distinct_bytes = 0

    def session(
        self, model: bytes, options: Callable[[int | None], Any], providers: list[Any]
    ) -> Any | None:
        """A session of `model` whose raw initializers come from the pool, or None for a
        graph with If, Loop or Scan bodies (the switch graph), which keeps its own
        weights: ONNX Runtime's optimised model of one may define a name in two
        branches (it then does not load), and `add_initializer` binds by name in every
        scope, so a branch's own tensor of that name would take the main graph's.
        `options(level)` makes fresh session options (None: the usual optimisation
        level). Raises what onnxruntime raises."""
        if has_subgraphs(model):
            return None
        data = self._optimised(model, options, providers)
        # ONNX Runtime inlines model functions, and would resolve side files from the
        # working directory: neither may reach add_initializer.
        if has_subgraphs(data) or external_tensors(data):
            return None
        second = options(self._ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        held = 0
        for init in raw_initializers(data):
            value = self._value(init)
            if value is not None:
                second.add_initializer(init.name, value)
                held += len(init.raw)
        session = self._ort.InferenceSession(data, sess_options=second, providers=providers)
        self.total_bytes += held
        return session

    def _optimised(
        self, model: bytes, options: Callable[[int | None], Any], providers: list[Any]
    ) -> bytes:
        """ONNX Runtime's optimised model of `model`, written to a private folder that is
        gone when this returns."""
        with tempfile.TemporaryDirectory(prefix="budget-edge-ort-") as folder:
            path = Path(folder) / "optimised.onnx"
            first = options(None)
            first.optimized_model_filepath = str(path)
            self._ort.InferenceSession(model, sess_options=first, providers=providers)
            return path.read_bytes()

    def _value(self, init: RawInitializer) -> Any | None:
        dtype = _NUMPY.get(init.data_type)
        if (
            dtype is None
            or not init.raw
            or len(init.raw) != int(np.prod(init.dims, dtype=np.int64)) * np.dtype(dtype).itemsize
        ):
            return None  # a type or size this pool does not know: the session keeps its own
        key = (init.data_type, init.dims, hashlib.sha256(init.raw).digest())
        value = self._values.get(key)
        if value is None:
            array = _aligned(np.frombuffer(init.raw, dtype).reshape(init.dims))
            self._buffers.append(array)
            value = self._ort.OrtValue.ortvalue_from_numpy(array)
            self._values[key] = value
            self.distinct_bytes += len(init.raw)
        return value


def _aligned(values: np.ndarray) -> np.ndarray:
    """A copy of `values` whose first byte is ALIGNMENT-aligned."""
    buffer = np.empty(values.nbytes + ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT
    out = buffer[start : start + values.nbytes].view(values.dtype).reshape(values.shape)
    out[...] = values
    return out
