"""Calibration inputs recorded on the paths the runtime takes (torch-free tiny artifacts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime.conftest import make_net, write_artifact  # the torch-free tiny artifact

from budget_edge.errors import DataError
from budget_edge.export.path_calibration import RecordingBackend, _Reservoir, record_graph_inputs
from budget_edge.runtime.backends import create_backend
from budget_edge.runtime.manifest import Manifest


def _images(n: int, net_channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, net_channels), np.uint8)


def test_the_reservoir_keeps_a_uniform_sample_of_the_stream() -> None:
    r = _Reservoir(100, np.random.default_rng(0))
    for start in range(0, 2000, 50):
        r.add([np.arange(start, start + 50, dtype=np.float32)[:, None]])
    kept = r.stacked()[0].ravel()
    assert kept.shape == (100,)
    assert r.seen == 2000
    assert len(set(kept.tolist())) == 100
    # every part of the stream is represented, not only the first rows
    assert kept.min() < 400
    assert kept.max() > 1600
    assert 700 < kept.mean() < 1300


def test_the_recorder_passes_calls_through_and_keeps_the_inputs(tmp_path: Path) -> None:
    write_artifact(make_net("resnet"), tmp_path)
    m = Manifest.load(tmp_path)
    inner = create_backend("onnxruntime", m, tmp_path, threads=1)
    rec = RecordingBackend(inner, max_rows=10)
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(rec.run("stem", [x])[0], inner.run("stem", [x])[0])
    np.testing.assert_array_equal(rec.samples["stem"].stacked()[0], x)
    assert rec.name != "onnxruntime"  # so the runtime never takes the switch graph


def test_every_graph_gets_inputs_from_every_pass(tmp_path: Path) -> None:
    write_artifact(make_net("resnet"), tmp_path, hot=[[1, 0, 1]], switch=True)
    m = Manifest.load(tmp_path)
    got = record_graph_inputs(
        tmp_path, m, _images(40), budgets=[0.2, 0.6], max_rows=1000, threads=1
    )
    assert got.passes == ["all kept", "agent c=0.2", "agent c=0.6"]
    graphs = {g.name for g in m.graphs} - {"switch"}
    assert set(got.feeds) == graphs
    for g in m.graphs:
        if g.name in got.feeds:
            for spec, arr in zip(g.inputs, got.feeds[g.name], strict=True):
                assert list(arr.shape[1:]) == [int(v) for v in spec.shape[1:]]
    assert got.rows["stem"] == 3 * 40  # every pass runs the stem on every image
    budgets = got.feeds["policy"][1]
    assert np.unique(budgets).tolist() == pytest.approx([0.2, 0.6])
    # block 0 ran with every block kept and again under the agent's masks; block 1's
    # skip graph ran where the agent dropped block 1 (the chain with all kept never does)
    assert got.rows["block0_p0"] > 40
    assert got.rows["block1_skip"] > 0
    assert got.rows["head"] == 3 * 40
    assert got.rows["full"] == 40  # the whole-image graphs take the images


def test_variants_the_policy_never_picks_take_their_blocks_inputs(tmp_path: Path) -> None:
    write_artifact(make_net("resnext", seed=1), tmp_path)
    m = Manifest.load(tmp_path)
    got = record_graph_inputs(tmp_path, m, _images(8), budgets=[0.5], max_rows=64, threads=1)
    for block in m.blocks:
        names = [v.graph for v in block.variants] + ([block.skip] if block.skip else [])
        assert all(n in got.feeds for n in names)


def test_no_images_is_a_clear_error(tmp_path: Path) -> None:
    write_artifact(make_net("resnet"), tmp_path)
    with pytest.raises(DataError, match="no calibration images"):
        record_graph_inputs(tmp_path, Manifest.load(tmp_path), _images(0))
