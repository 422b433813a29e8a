"""The switch graph: every block behind an If, one call per distinct mask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_artifacts import load_artifact_builder

from budget_edge.errors import ManifestError
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.backends import HostTensors
from budget_edge.runtime.backends.tensorrt_backend import graphs_to_run
from budget_edge.runtime.manifest import MANIFEST_NAME, Manifest

artifacts = load_artifact_builder("_switch_runtime_artifacts")
Artifact, make_net, write_artifact = (
    artifacts.Artifact,
    artifacts.make_net,
    artifacts.write_artifact,
)

ATOL = 1e-4


class CountingBackend(HostTensors):
    """Wraps a (host-tensor) backend and records which graphs ran."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[str] = []

    def run(self, graph: str, inputs: Any) -> Any:
        self.calls.append(graph)
        return self.inner.run(graph, inputs)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module", params=["resnet", "resnext"])
def switch_artifact(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    kind = str(request.param)
    net = make_net(kind, channels=1 if kind == "resnext" else 3, seed=1)
    path = tmp_path_factory.mktemp(f"switch-{kind}")
    return Artifact(net, path, write_artifact(net, path, hot=None, switch=True))


def _runtime(artifact: Any) -> tuple[BudgetRuntime, CountingBackend]:
    rt = BudgetRuntime.load(artifact.path, backend="onnxruntime", threads=1)
    counting = CountingBackend(rt.backend)
    rt.backend = counting  # type: ignore[assignment]
    return rt, counting


def _runnable_masks(manifest: Manifest, n: int, seed: int) -> np.ndarray:
    """Random masks, prefix-scheme blocks cut to a prefix of their paths."""
    rng = np.random.default_rng(seed)
    mask = (rng.random((n, manifest.num_components)) < 0.5).astype(np.uint8)
    for b in manifest.blocks:
        if b.variant_scheme == "prefix":
            idx = manifest.block_components(b.index)
            counts = rng.integers(0, len(idx) + 1, size=n)
            mask[:, idx] = np.arange(len(idx))[None, :] < counts[:, None]
    return mask


def test_switch_matches_the_per_sample_reference(switch_artifact: Any) -> None:
    rt, counting = _runtime(switch_artifact)
    x = np.random.default_rng(0).standard_normal((12, *switch_artifact.net.input_size))
    x = x.astype(np.float32)
    pool = _runnable_masks(rt.manifest, 5, seed=2)
    pool[0] = 0
    pool[1] = 1
    mask = pool[np.arange(12) % 5]  # five masks over twelve rows: a call per mask
    result = rt.infer(x, mask=mask)
    np.testing.assert_allclose(
        result.logits, switch_artifact.net.np_forward(x, mask), atol=ATOL, rtol=1e-4
    )
    distinct = len({m.tobytes() for m in mask})
    assert len(counting.calls) == distinct
    # The all-ones row runs the static graph; every other mask the switch graph.
    assert counting.calls.count("full") == 1
    assert counting.calls.count("switch") == distinct - 1


def test_a_mask_per_row_runs_the_block_chain(switch_artifact: Any) -> None:
    rt, counting = _runtime(switch_artifact)
    x = np.random.default_rng(1).standard_normal((8, *switch_artifact.net.input_size))
    x = x.astype(np.float32)
    mask = _runnable_masks(rt.manifest, 8, seed=9)
    mask[:, 0] = np.arange(8) % 2  # keep the rows apart even where the draw repeats
    assert len({m.tobytes() for m in mask}) > 4
    result = rt.infer(x, mask=mask)
    assert "switch" not in counting.calls
    assert "stem" in counting.calls
    np.testing.assert_allclose(
        result.logits, switch_artifact.net.np_forward(x, mask), atol=ATOL, rtol=1e-4
    )


def test_switch_and_block_chain_agree(switch_artifact: Any) -> None:
    rt, counting = _runtime(switch_artifact)
    x = np.random.default_rng(5).standard_normal((8, *switch_artifact.net.input_size))
    x = x.astype(np.float32)
    mask = _runnable_masks(rt.manifest, 2, seed=6)[np.arange(8) % 2]
    switched = rt.infer(x, mask=mask).logits
    rt._switch = None  # the per-block chain the TensorRT backend uses
    chained = rt.infer(x, mask=mask).logits
    np.testing.assert_allclose(switched, chained, atol=ATOL, rtol=1e-4)
    assert "stem" in counting.calls
    assert "switch" in counting.calls


def test_policy_masks_run_through_the_switch(switch_artifact: Any) -> None:
    rt, counting = _runtime(switch_artifact)
    x = np.random.default_rng(7).standard_normal((1, *switch_artifact.net.input_size))
    x = x.astype(np.float32)
    result = rt.infer(x, budget=0.5)
    assert counting.calls[0] == "policy"
    assert len(counting.calls) == 2
    np.testing.assert_allclose(
        result.logits, switch_artifact.net.np_forward(x, result.mask), atol=ATOL, rtol=1e-4
    )


def test_tensorrt_does_not_build_the_switch_graph(switch_artifact: Any) -> None:
    assert "switch" not in graphs_to_run(switch_artifact.manifest)


def test_a_wrong_codes_input_is_refused(tmp_path: Path) -> None:
    net = make_net("resnet")
    write_artifact(net, tmp_path, switch=True)
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    graph = next(g for g in data["graphs"] if g["name"] == "switch")
    graph["inputs"][1]["shape"] = [len(data["blocks"]) + 1]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="roles.switch"):
        Manifest.load(tmp_path)
    graph["inputs"][1]["shape"] = ["batch", len(data["blocks"])]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="control input"):
        Manifest.load(tmp_path)
