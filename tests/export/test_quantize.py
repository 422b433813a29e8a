"""`quantize_artifact`: fp16 and int8 graph sets beside the fp32 one, run by the runtime,
and an artifact left whole by every failure."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from budget_edge.errors import BackendError, ConfigError, DataError, ManifestError
from budget_edge.export import quantize as quantize_module
from budget_edge.export.qdq_check import tensorrt_qdq_problems
from budget_edge.export.quantize import QuantizeSettings, quantize_artifact, set_sizes
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.manifest import Manifest

from .conftest import META


def _copy(art: dict[str, Any], to: Path) -> Path:
    out = to / "artifact"
    shutil.copytree(art["dir"], out)
    return out


@pytest.fixture(scope="module")
def quantized(art: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The exported resnet20 with an int8 and an fp16 set, calibrated on its own images."""
    out = _copy(art, tmp_path_factory.mktemp("quantized"))
    before = set_sizes(Manifest.load(out), out)["fp32"]
    quantize_artifact(
        out, QuantizeSettings("int8", calib_images=64, max_rows=96), images=art["calib"]
    )
    manifest = quantize_artifact(out, QuantizeSettings("fp16"))
    return {"dir": out, "manifest": manifest, "calib": art["calib"], "fp32_bytes": before}


def _logits(directory: Path, precision: str, x: np.ndarray, **kwargs: Any) -> Any:
    with BudgetRuntime.load(
        directory, precision=precision, threads=1, dispatch=kwargs.pop("dispatch", "auto")
    ) as rt:
        return rt.infer(x, **kwargs)


def test_every_graph_gets_a_file_in_each_precision(quantized: dict[str, Any]) -> None:
    m = Manifest.load(quantized["dir"])
    assert sorted(m.precisions) == ["fp16", "int8"]
    assert m.available_precisions == ["fp32", "fp16", "int8"]
    for spec in m.precisions.values():
        assert set(spec.files) == {g.name for g in m.graphs}
        assert all(f.startswith("quantized/") and f in m.files for f in spec.files.values())
    # the fp32 set is untouched
    assert [g.file for g in m.graphs] == [g.file for g in quantized["manifest"].graphs]
    sizes = set_sizes(m, quantized["dir"])
    assert sizes["fp32"] == quantized["fp32_bytes"]
    assert sizes["int8"] < sizes["fp32"] / 2.5
    assert sizes["fp16"] < sizes["fp32"] * 0.6


def test_int8_graphs_are_qdq_with_int8_weights(quantized: dict[str, Any]) -> None:
    m = Manifest.load(quantized["dir"])
    block = onnx.load(str(quantized["dir"] / m.precisions["int8"].files["block000"]))
    ops = [n.op_type for n in block.graph.node]
    assert "QuantizeLinear" in ops
    assert "DequantizeLinear" in ops
    int8_weights = [
        t
        for t in block.graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4
    ]
    assert len(int8_weights) == 2  # both 3x3 convolutions of the block
    recipe = m.precisions["int8"].recipe
    assert recipe["format"] == "QDQ"
    assert recipe["activations"] == "uint8 asymmetric"
    assert recipe["calibration"]["passes"][0] == "all kept"
    assert any(p.startswith("agent c=") for p in recipe["calibration"]["passes"])
    rows = recipe["calibration"]["rows"]
    assert rows["stem"] == 96  # the reservoir cap: every pass runs the stem on 64 images
    assert 64 <= rows["block000"] <= 96  # all kept, then the masks that keep it


def test_the_policy_decision_layers_stay_fp32(quantized: dict[str, Any]) -> None:
    """The budget must not share the image features' int8 scale (see _decision_nodes)."""
    m = Manifest.load(quantized["dir"])
    policy = onnx.load(str(quantized["dir"] / m.precisions["int8"].files["policy"]))
    produced_by = {o: n for n in policy.graph.node for o in n.output}
    gemms = [n for n in policy.graph.node if n.op_type == "Gemm"]
    assert gemms
    for gemm in gemms:
        assert produced_by[gemm.input[0]].op_type != "DequantizeLinear"
    assert any(n.op_type == "QuantizeLinear" for n in policy.graph.node)  # the extractor is


def test_quantized_sets_classify_like_fp32(quantized: dict[str, Any]) -> None:
    x = quantized["calib"][:32]
    full = np.ones(quantized["manifest"].num_components, np.uint8)
    ref = _logits(quantized["dir"], "fp32", x, mask=full).logits
    half = _logits(quantized["dir"], "fp16", x, mask=full).logits
    np.testing.assert_allclose(half, ref, rtol=0.02, atol=0.02 * np.abs(ref).max())
    q = _logits(quantized["dir"], "int8", x, mask=full).logits
    assert (q.argmax(1) == ref.argmax(1)).mean() >= 0.9
    assert np.corrcoef(q.ravel(), ref.ravel())[0, 1] > 0.99


def test_int8_switch_graph_equals_the_int8_chain(quantized: dict[str, Any]) -> None:
    """The switch graph is composed from the set's own block graphs."""
    x = quantized["calib"][:8]
    k = quantized["manifest"].num_components
    mask = np.zeros(k, np.uint8)
    mask[::2] = 1
    switch = _logits(quantized["dir"], "int8", x, mask=mask)
    chain = _logits(quantized["dir"], "int8", x, mask=mask, dispatch="chain")
    assert switch.latency_ms["hot"] > 0
    assert chain.latency_ms["blocks"] > 0
    np.testing.assert_allclose(switch.logits, chain.logits, rtol=1e-5, atol=1e-5)


def test_the_policy_runs_in_each_precision(quantized: dict[str, Any]) -> None:
    x = quantized["calib"][:16]
    masks = {p: _logits(quantized["dir"], p, x, budget=0.5).mask for p in ("fp32", "fp16", "int8")}
    assert (masks["fp16"] == masks["fp32"]).mean() > 0.95
    assert (masks["int8"] == masks["fp32"]).mean() > 0.9


def test_requantizing_replaces_the_old_set(art: dict[str, Any], tmp_path: Path) -> None:
    out = _copy(art, tmp_path)
    quantize_artifact(out, QuantizeSettings("fp16"))
    first = Manifest.load(out).precisions["fp16"].files["stem"]
    quantize_artifact(out, QuantizeSettings("fp16"))
    m = Manifest.load(out)
    second = m.precisions["fp16"].files["stem"]
    assert second != first
    assert not (out / first).exists()
    assert (out / second).is_file()
    assert len(list((out / "quantized").iterdir())) == 1
    assert all((out / f).is_file() for f in m.files)
    BudgetRuntime.load(out, precision="fp16").close()


def test_a_failure_leaves_the_artifact_as_it_was(
    art: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _copy(art, tmp_path)
    before = (out / "manifest.json").read_text()

    def broken(ort: Any, path: Path, name: str) -> None:
        raise BackendError(f"the quantized graph {name!r} does not load")

    monkeypatch.setattr(quantize_module, "_check_loads", broken)
    with pytest.raises(BackendError, match="does not load"):
        quantize_artifact(out, QuantizeSettings("fp16"))
    assert (out / "manifest.json").read_text() == before
    assert list((out / "quantized").iterdir()) == []
    BudgetRuntime.load(out).close()


def test_a_folder_left_by_a_crash_is_removed_next_time(art: dict[str, Any], tmp_path: Path) -> None:
    out = _copy(art, tmp_path)
    orphan = out / "quantized" / "int8-deadbeef"
    orphan.mkdir(parents=True)
    (orphan / "stem.onnx").write_bytes(b"half")
    quantize_artifact(out, QuantizeSettings("fp16"))
    assert not orphan.exists()


def test_graphs_that_changed_are_not_quantized(art: dict[str, Any], tmp_path: Path) -> None:
    out = _copy(art, tmp_path)
    with open(out / "graphs" / "head.onnx", "ab") as f:
        f.write(b"\0")
    before = (out / "manifest.json").read_text()
    with pytest.raises(ManifestError, match="head.onnx .*SHA-256"):
        quantize_artifact(out, QuantizeSettings("fp16"))
    assert (out / "manifest.json").read_text() == before
    assert not (out / "quantized").exists()


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (QuantizeSettings("int4"), "precision 'int4' is not one of fp16, int8"),
        (QuantizeSettings("int8"), "int8 needs calibration images: pass --calib-data"),
        (QuantizeSettings("int8", "x", target="gpu"), "target 'gpu'"),
        (
            QuantizeSettings("int8", "x", target="tensorrt", activation_type="u8"),
            "TensorRT reads only symmetric int8",
        ),
        (QuantizeSettings("int8", "x", calibrate_method="mse"), "calibration method 'mse'"),
        (QuantizeSettings("int8", "x", budgets=[1.5]), r"budgets must be .* in \[0, 1\]"),
        (QuantizeSettings("int8", "x", calib_images=0), "at least 1"),
    ],
)
def test_bad_settings_are_one_line(
    art: dict[str, Any], settings: QuantizeSettings, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        quantize_artifact(art["dir"], settings)


def test_missing_calibration_data_is_a_clear_error(art: dict[str, Any], tmp_path: Path) -> None:
    out = _copy(art, tmp_path)
    before = (out / "manifest.json").read_text()
    with pytest.raises(DataError, match="unknown dataset 'no-such-dataset'; choose one of"):
        quantize_artifact(out, QuantizeSettings("int8", calib_data="no-such-dataset"))
    assert (out / "manifest.json").read_text() == before
    assert list((out / "quantized").iterdir()) == []


def test_tensorrt_target_uses_symmetric_int8_activations(
    art: dict[str, Any], tmp_path: Path
) -> None:
    out = _copy(art, tmp_path)
    m = quantize_artifact(
        out,
        QuantizeSettings("int8", target="tensorrt", calib_images=16, max_rows=16, budgets=[0.5]),
        images=art["calib"][:16],
    )
    assert m.precisions["int8"].recipe["activations"] == "int8 symmetric"
    stem = onnx.load(str(out / m.precisions["int8"].files["stem"]))
    zero_points = [t for t in stem.graph.initializer if t.name.endswith("zero_point")]
    assert zero_points  # int8 for weights and activations: never uint8, never int32
    assert all(t.data_type == onnx.TensorProto.INT8 for t in zero_points)
    assert all(not onnx.numpy_helper.to_array(t).any() for t in zero_points)
    # Every graph TensorRT's parser takes: no Dequantize of an int32 bias, no uint8.
    for name, file in m.precisions["int8"].files.items():
        assert tensorrt_qdq_problems(onnx.load(str(out / file))) == [], name


def test_the_cpu_target_keeps_int32_biases_tensorrt_would_refuse(
    art: dict[str, Any], tmp_path: Path
) -> None:
    out = _copy(art, tmp_path)
    m = quantize_artifact(
        out,
        QuantizeSettings("int8", calib_images=16, max_rows=16, budgets=[0.5]),
        images=art["calib"][:16],
    )
    problems = tensorrt_qdq_problems(onnx.load(str(out / m.precisions["int8"].files["stem"])))
    assert any("reads INT32" in p for p in problems)  # ONNX Runtime's fused CPU kernels


def test_a_second_writer_is_refused_and_changes_nothing(
    art: dict[str, Any], tmp_path: Path
) -> None:
    """Two writers would each read the manifest and the last would drop the other's
    entries: while one holds the lock, the other is refused before it writes a byte."""
    from budget_edge.runtime.manifest import Manifest, artifact_lock

    out = _copy(art, tmp_path)
    before = (out / "manifest.json").read_bytes()
    with artifact_lock(out):  # another quantize or build-engines is writing
        with pytest.raises(ManifestError, match="being written by another budget-edge"):
            quantize_artifact(out, QuantizeSettings("fp16"))
        assert (out / "manifest.json").read_bytes() == before
        assert not (out / "quantized").exists() or not any((out / "quantized").iterdir())
    quantize_artifact(out, QuantizeSettings("fp16"))  # free again: it runs
    assert "fp16" in Manifest.load(out).available_precisions


def test_a_quantizer_failure_is_one_line_and_changes_nothing(
    art: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime.transformers.float16 as float16

    out = _copy(art, tmp_path)
    before = (out / "manifest.json").read_text()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("unsupported op")

    monkeypatch.setattr(float16, "convert_float_to_float16", broken)
    with pytest.raises(
        BackendError,
        match="quantizing to fp16 failed .*ValueError: unsupported op.*the artifact is unchanged",
    ):
        quantize_artifact(out, QuantizeSettings("fp16"))
    assert (out / "manifest.json").read_text() == before
    assert list((out / "quantized").iterdir()) == []


def test_requantizing_unlists_the_engines_built_from_the_old_set(
    art: dict[str, Any], tmp_path: Path
) -> None:
    from budget_edge.runtime.manifest import TensorRTSpec, write_manifest

    out = _copy(art, tmp_path)
    m = quantize_artifact(out, QuantizeSettings("fp16"))
    (out / "engines").mkdir()
    (out / "engines" / "stem.engine").write_bytes(b"built from the old fp16 stem")
    m.tensorrt = TensorRTSpec("10.3.0", "Orin", "fp16", 8, {"stem": "engines/stem.engine"})
    write_manifest(out, m)
    m = quantize_artifact(out, QuantizeSettings("fp16"))
    assert m.tensorrt is None
    assert "engines/stem.engine" not in m.files
    BudgetRuntime.load(out).close()


def test_exporting_again_drops_the_old_quantized_sets(
    art: dict[str, Any], exporter: Any, tmp_path: Path
) -> None:
    from budget_edge.export.exporter import export_checkpoint
    from budget_edge.models.checkpoint import LoadedCheckpoint

    out = _copy(art, tmp_path)
    quantize_artifact(out, QuantizeSettings("fp16"))
    export_checkpoint(
        LoadedCheckpoint(art["net"], art["agent"], META, "budget-edge"), out, exporter=exporter
    )
    assert not (out / "quantized").exists()
    assert Manifest.load(out).precisions == {}
