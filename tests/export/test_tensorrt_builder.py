"""build-engines without a GPU: what gets built from which graphs, the manifest update,
the TensorRT calls against stand-ins shaped like TensorRT 10.3 and 11, and every error
path that comes before TensorRT itself."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import budget_edge.export
from budget_edge.errors import BackendError, ConfigError, ManifestError
from budget_edge.export import cuda_device
from budget_edge.export.engine_plan import make_settings, plan_engines, with_engines
from budget_edge.export.quantize import QuantizeSettings, quantize_artifact
from budget_edge.export.tensorrt_builder import build_engines, require_tensorrt
from budget_edge.runtime.manifest import verify_files, write_manifest

from .fake_trt_builder import make_fake_trt_builder


def test_one_engine_per_graph_in_chain_order(art):
    m = art["manifest"]
    jobs = plan_engines(m, "fp32")
    # Every graph but the switch graph, which is for ONNX Runtime only.
    assert sorted(j.graph for j in jobs) == sorted(g.name for g in m.graphs if g.name != "switch")
    assert m.roles["switch"] == "switch"
    names = [j.graph for j in jobs]
    assert names[:5] == ["stem", "block000", "block001", "block002", "block003"]
    assert names.index("block003_skip") == names.index("block003") + 1
    assert names[-5:] == ["head", "policy", "full", "hot00", "hot01"]
    assert [j.block for j in jobs if j.role == "block"] == sorted(
        j.block for j in jobs if j.role == "block"
    )
    policy = next(j for j in jobs if j.graph == "policy")
    assert (policy.role, policy.engine_file) == ("policy", "engines/fp32/policy.engine")
    assert next(j for j in jobs if j.graph == "stem").onnx_file == "graphs/stem.onnx"


def test_manifest_update_lists_engines_version_and_gpu(art, tmp_path):
    root = tmp_path / "art"
    shutil.copytree(art["dir"], root)
    m = quantize_artifact(root, QuantizeSettings("fp16"))
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
    assert set(updated.files) == set(m.files) | set(engines.values())
    # A rebuild at another precision replaces the engine list; old engine files may go.
    fp32 = make_settings("fp32")
    jobs32 = plan_engines(loaded, "fp32")
    for job in jobs32:
        (root / job.engine_file).parent.mkdir(parents=True, exist_ok=True)
        (root / job.engine_file).write_bytes(b"32")
    shutil.rmtree(root / "engines" / "fp16")
    rebuilt = write_manifest(
        root,
        with_engines(
            loaded, {j.graph: j.engine_file for j in jobs32}, fp32, "10.3.0", "Orin", "8.7"
        ),
    )
    assert not any(f.startswith("engines/fp16/") for f in rebuilt.files)
    verify_files(root)


def test_without_tensorrt_the_error_says_what_to_install(art, monkeypatch):
    # Here only tensorrt-stubs is installed: an empty namespace package.
    with pytest.raises(BackendError, match="pip install tensorrt"):
        require_tensorrt()
    with pytest.raises(BackendError, match="JetPack"):
        build_engines(art["dir"], precision="fp32")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not importable at all
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        build_engines(art["dir"], precision="fp32")


def test_without_cuda_python_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(BackendError, match="pip install 'cuda-python>=12,<13'"):
        cuda_device.gpu_info()


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"precision": "int8"}, ConfigError, "quantize DIR --precision int8 --target tensorrt"),
        ({"precision": "fp16"}, ConfigError, "quantize DIR --precision fp16"),
        ({"precision": "int4"}, ConfigError, "fp32, fp16, int8"),
        ({"precision": "fp16", "max_batch": 0}, ConfigError, "--max-batch"),
        ({"precision": "fp32", "max_batch": 4, "opt_batch": 8}, ConfigError, "1..4"),
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
        build_engines(root, precision="fp32")


# ---- the TensorRT calls, against stand-ins of each API version ---------------------------


@pytest.fixture(scope="module")
def quantized_for_tensorrt(art, tmp_path_factory) -> Path:
    """The exported resnet20 with an fp16 set and an int8 set made for TensorRT."""
    root = tmp_path_factory.mktemp("trt") / "art"
    shutil.copytree(art["dir"], root)
    quantize_artifact(root, QuantizeSettings("fp16"))
    quantize_artifact(
        root,
        QuantizeSettings("int8", target="tensorrt", calib_images=16, max_rows=16, budgets=[0.5]),
        images=art["calib"][:16],
    )
    return root


def _fake(monkeypatch: pytest.MonkeyPatch, version: str, **kwargs: Any) -> Any:
    trt = make_fake_trt_builder(version, **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    # A fresh trt_engine bound to this stand-in (the package caches its submodules too).
    monkeypatch.delitem(sys.modules, "budget_edge.export.trt_engine", raising=False)
    monkeypatch.delattr(budget_edge.export, "trt_engine", raising=False)
    monkeypatch.setattr(
        cuda_device, "gpu_info", lambda device=0: cuda_device.GpuInfo("Fake GPU", "8.7")
    )
    return trt


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engines_build_strongly_typed_from_the_precision_set(
    quantized_for_tensorrt, tmp_path, monkeypatch, version, precision
):
    root = tmp_path / "art"
    shutil.copytree(quantized_for_tensorrt, root)
    trt = _fake(monkeypatch, version)
    manifest = build_engines(root, precision=precision, max_batch=4)
    sources = manifest.for_precision(precision)
    jobs = plan_engines(manifest, precision)
    assert len(trt.builds) == len(jobs) + 1  # and the preprocess engine, last
    *graph_builds, (prep_network, prep_config, _) = trt.builds
    for (network, config, path), job in zip(graph_builds, jobs, strict=True):
        assert network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        assert Path(path) == root / sources.graph(job.graph).file  # this precision's graph
        assert not config.flags  # no weakly typed precision flags
        assert config.cleared == ({"TF32"} if precision == "fp32" else set())
        (profile,) = config.profiles
        lo, opt, hi = profile.shapes[network.inputs[0].name]
        assert (lo[0], opt[0], hi[0]) == (1, 1, 4)
    # The preprocess engine: uint8 (batch, 32, 32, 3) pixels, its constants fixed.
    (profile,) = prep_config.profiles
    assert profile.shapes["pixels"] == ([1, 32, 32, 3], [1, 32, 32, 3], [4, 32, 32, 3])
    assert profile.shapes["scale"] == ([1, 3, 1, 1],) * 3
    assert manifest.tensorrt is not None
    folder = Path(manifest.tensorrt.preprocess).parent
    assert folder.name.startswith(f"{precision}-")  # each build its own folder
    assert {str(Path(f).parent) for f in manifest.tensorrt.engines.values()} == {str(folder)}
    assert not list((root / folder).glob("*.onnx"))
    assert (manifest.tensorrt.version, manifest.tensorrt.precision) == (version, precision)
    assert (root / manifest.tensorrt.engines["stem"]).read_bytes() == Path(
        sources.graph("stem").file
    ).name.encode()
    verify_files(root)
    assert (root / f"engines/timing-{version}-fake-gpu-sm8.7.cache").is_file()


def test_a_failed_build_leaves_the_artifact_as_it_was(
    quantized_for_tensorrt, tmp_path, monkeypatch
):
    root = tmp_path / "art"
    shutil.copytree(quantized_for_tensorrt, root)
    trt = _fake(monkeypatch, "11.4.0")
    first = build_engines(root, precision="fp32")
    before = (root / "manifest.json").read_text()
    builds = len(trt.builds)
    original = trt.Builder.build_serialized_network

    def fails_on_the_fifth(self, network, config):
        return None if len(trt.builds) == builds + 4 else original(self, network, config)

    monkeypatch.setattr(trt.Builder, "build_serialized_network", fails_on_the_fifth)
    with pytest.raises(BackendError, match="TensorRT failed to build"):
        build_engines(root, precision="fp32")
    assert (root / "manifest.json").read_text() == before
    assert sorted(p.name for p in (root / "engines").iterdir() if p.is_dir()) == [
        Path(first.tensorrt.preprocess).parent.name
    ]
    verify_files(root)  # the earlier engines are intact
    monkeypatch.setattr(trt.Builder, "build_serialized_network", original)
    second = build_engines(root, precision="fp32")
    assert not (root / Path(first.tensorrt.preprocess).parent).exists()  # replaced, then gone
    verify_files(root)
    assert second.tensorrt.engines != first.tensorrt.engines


def test_unsupported_tensorrt_is_one_line(quantized_for_tensorrt, tmp_path, monkeypatch):
    root = tmp_path / "art"
    shutil.copytree(quantized_for_tensorrt, root)
    _fake(monkeypatch, "8.5.2")
    with pytest.raises(BackendError, match="TensorRT 8.5.2 is not supported: .*10.3"):
        build_engines(root, precision="fp32")


def test_a_cpu_int8_set_cannot_make_engines(art, tmp_path, monkeypatch):
    root = tmp_path / "art"
    shutil.copytree(art["dir"], root)
    quantize_artifact(
        root,
        QuantizeSettings("int8", calib_images=8, max_rows=8, budgets=[0.5]),
        images=art["calib"][:8],
    )
    _fake(monkeypatch, "11.4.0")
    with pytest.raises(ConfigError, match="made for the CPU .*--target tensorrt"):
        build_engines(root, precision="int8")


def test_fast_fp16_is_checked_where_tensorrt_can_still_say(
    quantized_for_tensorrt, tmp_path, monkeypatch
):
    root = tmp_path / "art"
    shutil.copytree(quantized_for_tensorrt, root)
    _fake(monkeypatch, "10.3.0", fast_fp16=False)
    with pytest.raises(ConfigError, match="no fast fp16: build with --precision fp32"):
        build_engines(root, precision="fp16")
    trt = _fake(monkeypatch, "11.4.0")  # the query is gone: TensorRT builds what the graph asks
    build_engines(root, precision="fp16")
    assert trt.builds


def test_a_graph_with_qdq_tensorrt_refuses_is_caught_before_tensorrt(
    quantized_for_tensorrt, tmp_path, monkeypatch
):
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from budget_edge.runtime.manifest import Manifest

    root = tmp_path / "art"
    shutil.copytree(quantized_for_tensorrt, root)
    stem = root / Manifest.load(root).for_precision("int8").graph("stem").file
    model = onnx.load(str(stem))  # an int32 bias behind a Dequantize, as the CPU target writes
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.zeros(4, np.int32), "bias_quantized"),
            numpy_helper.from_array(np.array(0.1, np.float32), "bias_scale"),
        ]
    )
    model.graph.node.append(
        helper.make_node("DequantizeLinear", ["bias_quantized", "bias_scale"], ["b"], "dq_bias")
    )
    onnx.save(model, str(stem))
    write_manifest(root, Manifest.load(root))
    trt = _fake(monkeypatch, "10.3.0")
    with pytest.raises(
        ConfigError, match="graph 'stem' has Q/DQ .*DequantizeLinear 'dq_bias' reads INT32"
    ):
        build_engines(root, precision="int8")
    assert trt.builds == []
    # The stand-in parser refuses it too, as TensorRT's does.
    parser = trt.OnnxParser(trt.Builder(None).create_network(0), None)
    assert not parser.parse_from_file(str(stem))
    assert "dq_bias" in parser.get_error(0)


def test_a_rejected_timing_cache_names_its_own_file(quantized_for_tensorrt, tmp_path, monkeypatch):
    root = tmp_path / "art"
    shutil.copytree(quantized_for_tensorrt, root)
    _fake(monkeypatch, "10.3.0")
    from . import fake_trt_builder

    monkeypatch.setattr(
        fake_trt_builder._Config, "set_timing_cache", lambda self, cache, ignore: False
    )
    with pytest.raises(BackendError, match=r"delete .*engines/timing-10\.3\.0-fake-gpu-sm8\.7"):
        build_engines(root, precision="fp32")
