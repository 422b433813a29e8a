"""build-engines without a GPU: what gets built, the manifest update, calibration
inputs and every error path that comes before TensorRT itself."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from budget_edge.errors import BackendError, ConfigError, ManifestError
from budget_edge.export import cuda_device
from budget_edge.export.calibration_feed import CalibrationInputs, batches
from budget_edge.export.engine_plan import make_settings, plan_engines, with_engines
from budget_edge.export.tensorrt_builder import build_engines, require_tensorrt
from budget_edge.runtime.manifest import Manifest, verify_files, write_manifest

from .conftest import close


def test_one_engine_per_graph_in_chain_order(art):
    m = art["manifest"]
    jobs = plan_engines(m, "fp16")
    # Every graph but the switch graph, which is for ONNX Runtime only.
    assert sorted(j.graph for j in jobs) == sorted(g.name for g in m.graphs
                                                   if g.name != "switch")
    assert m.roles["switch"] == "switch"
    names = [j.graph for j in jobs]
    assert names[:5] == ["stem", "block000", "block001", "block002", "block003"]
    assert names.index("block003_skip") == names.index("block003") + 1
    assert names[-5:] == ["head", "policy", "full", "hot00", "hot01"]
    assert [j.block for j in jobs if j.role == "block"] == sorted(
        j.block for j in jobs if j.role == "block")
    policy = next(j for j in jobs if j.graph == "policy")
    assert (policy.role, policy.engine_file) == ("policy", "engines/fp16/policy.engine")
    assert next(j for j in jobs if j.graph == "stem").onnx_file == "graphs/stem.onnx"


def test_manifest_update_lists_engines_version_and_gpu(art, tmp_path):
    root = tmp_path / "art"
    shutil.copytree(art["dir"], root)
    m = Manifest.load(root)
    settings = make_settings("fp16", max_batch=16)
    jobs = plan_engines(m, settings.precision)
    for job in jobs:  # stand-ins for engine files: the manifest hashes what is there
        (root / job.engine_file).parent.mkdir(parents=True, exist_ok=True)
        (root / job.engine_file).write_bytes(job.graph.encode())
    engines = {j.graph: j.engine_file for j in jobs}
    updated = write_manifest(root, with_engines(m, engines, settings, "10.3.0", "Orin", "8.7"))
    assert m.tensorrt is None  # the input manifest is not modified
    loaded = verify_files(root)
    assert loaded.tensorrt is not None
    assert (loaded.tensorrt.version, loaded.tensorrt.gpu) == ("10.3.0", "Orin")
    assert (loaded.tensorrt.precision, loaded.tensorrt.max_batch) == ("fp16", 16)
    assert loaded.tensorrt.compute_capability == "8.7"
    assert loaded.tensorrt.engines == engines
    assert set(updated.files) == {g.file for g in m.graphs} | set(engines.values())
    # A rebuild at another precision replaces the engine list; old engine files may go.
    fp32 = make_settings("fp32")
    jobs32 = plan_engines(loaded, "fp32")
    for job in jobs32:
        (root / job.engine_file).parent.mkdir(parents=True, exist_ok=True)
        (root / job.engine_file).write_bytes(b"32")
    shutil.rmtree(root / "engines" / "fp16")
    rebuilt = write_manifest(root, with_engines(
        loaded, {j.graph: j.engine_file for j in jobs32}, fp32, "10.3.0", "Orin", "8.7"))
    assert not any("fp16" in f for f in rebuilt.files)
    verify_files(root)


def test_without_tensorrt_the_error_says_what_to_install(art, monkeypatch):
    # Here only tensorrt-stubs is installed: an empty namespace package.
    with pytest.raises(BackendError, match="pip install tensorrt"):
        require_tensorrt()
    with pytest.raises(BackendError, match="JetPack"):
        build_engines(art["dir"], precision="fp16")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not importable at all
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        build_engines(art["dir"], precision="fp32")


def test_without_cuda_python_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(BackendError, match="pip install cuda-python"):
        cuda_device.gpu_info()


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"precision": "int8"}, ConfigError, "--calib-data"),
        ({"precision": "fp16", "calib_data": "fashion-mnist"}, ConfigError, "only used with"),
        ({"precision": "int4"}, ConfigError, "fp32, fp16, int8"),
        ({"precision": "fp16", "max_batch": 0}, ConfigError, "--max-batch"),
        ({"precision": "int8", "calib_data": np.zeros((4, 3, 32, 32), np.float32)},
         ConfigError, "fewer than one calibration batch"),
    ],
)
def test_bad_options_fail_before_any_build(art, kwargs, error, words):
    with pytest.raises(error, match=words):
        build_engines(art["dir"], **kwargs)


def test_a_damaged_graph_is_refused_before_building(art, tmp_path):
    root = tmp_path / "art"
    shutil.copytree(art["dir"], root)
    (root / "graphs" / "head.onnx").write_bytes(b"\x00")
    with pytest.raises(ManifestError, match="graphs/head.onnx"):
        build_engines(root, precision="fp16")


def test_calibration_inputs_follow_the_chain(art):
    net, m = art["net"], art["manifest"]
    images = art["calib"][:8]
    feed = CalibrationInputs(art["dir"], m, images)
    jobs = plan_engines(m, "int8")
    x = torch.from_numpy(images)
    with torch.no_grad():
        h = net.stem(x)
        inputs = {-1: x}
        for b, block in enumerate(net.blocks):
            inputs[b] = h
            h = block(h)
        inputs[len(net.blocks)] = h
    for job in jobs:
        feeds = feed.for_job(job)
        graph = m.graph(job.graph)
        assert list(feeds) == [t.name for t in graph.inputs]
        first = next(iter(feeds.values()))
        if job.role == "block":
            close(first, inputs[job.block])
        elif job.role == "head":
            close(first, inputs[len(net.blocks)])
        else:
            np.testing.assert_array_equal(first, images)
        if job.role == "policy":
            budget = feeds["budget"]
            assert budget.shape == (8,) and (budget > 0).all() and (budget <= 1).all()


def test_calibration_batches_are_full_only():
    feeds = {"x": np.arange(10.0), "y": np.arange(10.0) * 2}
    got = list(batches(feeds, 4))
    assert [len(b["x"]) for b in got] == [4, 4]
    np.testing.assert_array_equal(got[1]["y"], [8.0, 10.0, 12.0, 14.0])
