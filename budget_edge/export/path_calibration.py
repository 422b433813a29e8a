"""Calibration inputs on the paths that run, for `budget-edge quantize`.

An int8 block graph needs scales that cover what reaches it in deployment.
Under a low budget block 5 may follow block 2 directly, and its input then has
other ranges than in the all-kept chain. So the fp32 runtime dispatches the
calibration images block by block (dispatch="chain") once with every
component kept, then under the agent's masks over a sweep of budgets (and
under the searched static masks, when the artifact has them), while a
recording backend keeps each graph's inputs: a reservoir sample of at most
`max_rows` rows per graph, so every pass is represented without holding every
activation. Whole-image graphs that the chain never calls (`full`, hot
policies) take the images themselves; a variant or skip graph no pass reached
takes the inputs recorded for its block's other graphs (they all read the
block's input). numpy + onnxruntime, no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from budget_edge.errors import DataError
from budget_edge.runtime.backends import Backend, HostTensors, create_backend
from budget_edge.runtime.inputs import prepare_images
from budget_edge.runtime.manifest import Manifest
from budget_edge.runtime.request import Agent, Decision, InferenceRequest, Mask, Static
from budget_edge.runtime.runtime import BudgetRuntime

DEFAULT_BUDGETS = (0.25, 0.5, 0.75, 1.0)
DEFAULT_MAX_ROWS = 1024
CHUNK = 64  # images per runtime call while recording

Progress = Callable[[str], None]


class _Reservoir:
    """A uniform sample of at most `cap` input rows out of every row offered (Algorithm R)."""

    def __init__(self, cap: int, rng: np.random.Generator) -> None:
        self.cap = cap
        self.rng = rng
        self.rows: list[list[np.ndarray]] = []
        self.seen = 0

    def add(self, inputs: Sequence[np.ndarray]) -> None:
        for i in range(inputs[0].shape[0]):
            if len(self.rows) < self.cap:
                self.rows.append([np.array(a[i]) for a in inputs])
            else:
                j = int(self.rng.integers(0, self.seen + 1))
                if j < self.cap:
                    self.rows[j] = [np.array(a[i]) for a in inputs]
            self.seen += 1

    def stacked(self) -> list[np.ndarray]:
        return [np.stack([row[k] for row in self.rows]) for k in range(len(self.rows[0]))]


class RecordingBackend(HostTensors):
    """Runs every graph with `inner` (an ONNX Runtime backend: host tensors) and keeps a
    sample of each graph's inputs.

    Its name is not "onnxruntime", so the runtime never takes the switch graph
    and every block graph is called on its own.
    """

    name = "recording"

    def __init__(self, inner: Backend, max_rows: int, seed: int = 0) -> None:
        self.inner = inner
        self.max_rows = max_rows
        self._rng = np.random.default_rng(seed)
        self.samples: dict[str, _Reservoir] = {}

    def run(self, graph: str, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.samples.setdefault(graph, _Reservoir(self.max_rows, self._rng)).add(inputs)
        return self.inner.run(graph, inputs)

    def close(self) -> None:
        self.inner.close()


@dataclass
class GraphFeeds:
    """Every graph's calibration inputs (in manifest input order, rows on axis 0), and
    what produced them (for the recipe in the manifest)."""

    feeds: dict[str, list[np.ndarray]]
    passes: list[str]
    rows: dict[str, int]


def record_graph_inputs(
    directory: Path,
    manifest: Manifest,
    images: np.ndarray,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    max_rows: int = DEFAULT_MAX_ROWS,
    threads: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> GraphFeeds:
    """Run the fp32 graphs on `images` along the paths the runtime takes; see the module
    docstring. `images`: preprocessed float32 NCHW or uint8 NHWC pixels."""
    if len(images) == 0:
        raise DataError("no calibration images: pass a dataset with training images")
    say = progress or (lambda _msg: None)
    recorder = RecordingBackend(
        create_backend("onnxruntime", manifest, directory, threads), max_rows, seed
    )
    rt = BudgetRuntime(manifest, directory, recorder, dispatch="chain")
    x = prepare_images(images, manifest.preprocessing)
    # (label, budget, decision) of every pass
    passes: list[tuple[str, float | None, Decision]] = [
        ("all kept", None, Mask(np.ones(rt.num_components, np.uint8)))
    ]
    if rt.has_policy:
        passes += [(f"agent c={c:g}", c, Agent("greedy")) for c in budgets]
    if rt.has_allocator:  # the paths of mode 'allocate': fewer components for easy images
        passes += [(f"allocate c={c:g}", c, Agent("allocate")) for c in budgets]
    if rt.has_static_masks:
        passes += [(f"static mask c={c:g}", c, Static()) for c in budgets]
    for label, budget, decision in passes:
        say(f"recording graph inputs: {label}")
        for start in range(0, len(x), CHUNK):
            rt.run(InferenceRequest(x[start : start + CHUNK], budget, decision))
    rt.close()
    feeds = {g: s.stacked() for g, s in recorder.samples.items()}
    _fill_unreached(manifest, feeds, x[:max_rows])
    return GraphFeeds(
        feeds, [label for label, _, _ in passes], {g: int(f[0].shape[0]) for g, f in feeds.items()}
    )


def _fill_unreached(
    manifest: Manifest, feeds: dict[str, list[np.ndarray]], images: np.ndarray
) -> None:
    """Give the graphs no pass called the inputs they would have seen."""
    image_shape = list(images.shape[1:])
    switch = manifest.roles.get("switch")
    for block in manifest.blocks:
        names = [v.graph for v in block.variants] + ([block.skip] if block.skip else [])
        reached = next((feeds[n] for n in names if n in feeds), None)
        for n in names:
            if n not in feeds and reached is not None:
                feeds[n] = reached
    for g in manifest.graphs:
        if g.name in feeds or g.name == switch:
            continue
        if len(g.inputs) == 1 and list(g.inputs[0].shape[1:]) == image_shape:
            feeds[g.name] = [images]  # full model, hot policies
        else:
            raise DataError(
                f"no calibration input reached graph {g.name!r}: re-export the "
                "artifact (its manifest and graphs disagree)"
            )
