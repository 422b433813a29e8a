"""A minimal ONNX Runtime chain over an artifact dir, for parity tests.

Runs each image alone through stem, the graph of each block that its mask
selects (a variant or the skip), and the head: the simplest faithful reading
of the manifest, independent of the runtime's batching.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from budget_edge.runtime.manifest import Manifest


class OrtChain:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.manifest = Manifest.load(self.dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.sessions = {
            g.name: ort.InferenceSession(str(self.dir / g.file), options,
                                         providers=["CPUExecutionProvider"])
            for g in self.manifest.graphs
        }

    def run(self, name: str, *inputs: np.ndarray) -> list[np.ndarray]:
        session = self.sessions[name]
        feeds = {i.name: x for i, x in zip(session.get_inputs(), inputs, strict=True)}
        return session.run(None, feeds)

    def block_graph(self, b: int, row: np.ndarray) -> str | None:
        """The graph block b runs for mask row `row` (None: identity)."""
        block = self.manifest.blocks[b]
        comps = self.manifest.block_components(b)
        kept = [p for p, k in enumerate(comps) if row[k]]
        if not kept:
            return block.skip
        for variant in block.variants:
            if variant.paths == kept:
                return variant.graph
        raise AssertionError(f"block {b} has no variant for paths {kept}")

    def logits(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        out = []
        for image, row in zip(images, masks, strict=True):
            x = self.run("stem", image[None])[0]
            for b in range(len(self.manifest.blocks)):
                graph = self.block_graph(b, row)
                if graph is not None:
                    x = self.run(graph, x)[0]
            out.append(self.run("head", x)[0][0])
        return np.stack(out)
