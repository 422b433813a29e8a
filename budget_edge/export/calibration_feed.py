"""Per-graph INT8 calibration inputs, computed by walking the exported chain.

A block's engine is calibrated on what reaches that block: the calibration
images through the stem and every earlier block (all paths kept). ONNX Runtime
runs the chain on the CPU, one block ahead of the engine being built, so only
one activation set is in memory at a time. numpy + onnxruntime, no torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from budget_edge.errors import BackendError
from budget_edge.export.engine_plan import EngineJob
from budget_edge.runtime.manifest import Manifest

Feeds = dict[str, np.ndarray]


def _session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendError("INT8 calibration runs the graphs with ONNX Runtime: "
                           "pip install onnxruntime") from exc
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class CalibrationInputs:
    """The inputs of each graph for a set of preprocessed calibration images."""

    def __init__(self, root: Path, manifest: Manifest, images: np.ndarray, seed: int = 0) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        # Budgets spread over (0, 1]: the policy is calibrated on the range it will see.
        rng = np.random.default_rng(seed)
        self.budgets = rng.uniform(0.05, 1.0, len(self.images)).astype(np.float32)
        self._position = -1  # -1: at the stem's input; b: at block b's input
        self._activation = self.images

    def for_job(self, job: EngineJob) -> Feeds:
        graph = self.manifest.graph(job.graph)
        names = [t.name for t in graph.inputs]
        if job.role == "policy":
            return {names[0]: self.images, names[1]: self._budget_like(len(graph.inputs[1].shape))}
        if job.role in ("stem", "full", "hot"):
            return {names[0]: self.images}
        target = job.block if job.role == "block" else len(self.manifest.blocks)
        return {names[0]: self._walk_to(target)}

    def _budget_like(self, rank: int) -> np.ndarray:
        return self.budgets if rank == 1 else self.budgets.reshape(-1, 1)

    def _walk_to(self, block: int) -> np.ndarray:
        if block < self._position:
            raise ValueError("calibration walks the chain forwards only: plan jobs in order")
        while self._position < block:
            self._activation = self._run(self._next_graph(), self._activation)
            self._position += 1
        return self._activation

    def _next_graph(self) -> str:
        """The graph from the current position to the next block's input."""
        if self._position == -1:
            return str(self.manifest.roles["stem"])
        block = self.manifest.blocks[self._position]
        return next(v.graph for v in block.variants if len(v.paths) == block.num_paths)

    def _run(self, graph: str, x: np.ndarray) -> np.ndarray:
        session = _session(self.root / self.manifest.graph(graph).file)
        name = session.get_inputs()[0].name
        out: list[np.ndarray] = []
        for start in range(0, len(x), 256):
            out.append(session.run(None, {name: x[start : start + 256]})[0])
        return np.concatenate(out)


def batches(feeds: Mapping[str, np.ndarray], batch_size: int) -> Iterator[Feeds]:
    """Full batches only: TensorRT calibrates at one fixed batch size."""
    n = min(len(v) for v in feeds.values())
    for start in range(0, n - batch_size + 1, batch_size):
        yield {k: v[start : start + batch_size] for k, v in feeds.items()}
