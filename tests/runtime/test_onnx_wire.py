"""External data is found in every place ONNX can keep a tensor, and refused at load; graphs
that do not match their manifest entry are refused at load, before any request runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from budget_edge.errors import ManifestError
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.manifest import write_manifest
from budget_edge.runtime.onnx_wire import (
    WireError,
    external_tensors,
    graph_signature,
    has_subgraphs,
    raw_initializers,
)


def _as_external(tensor: TensorProto, location: str = "weights.bin") -> TensorProto:
    """The same tensor, marked as stored in a side file (what onnx.save writes)."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def _weight(name: str = "W") -> TensorProto:
    return numpy_helper.from_array(np.ones((2, 2), np.float32), name)


def _model(graph: onnx.GraphProto) -> bytes:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _matmul_graph(weight: TensorProto, name: str = "g") -> onnx.GraphProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    return helper.make_graph(
        [helper.make_node("MatMul", ["x", weight.name], ["y"])], name, [x], [y], [weight]
    )


def test_raw_initializers_are_read_with_their_type_shape_and_bytes() -> None:
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    steps = np.array([1, -2], np.int64)
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [2], [1.0, 2.0])  # float_data
    scalar = numpy_helper.from_array(np.array(3.5, np.float64), "scalar")
    graph = _matmul_graph(_weight("W"))
    graph.initializer.extend(
        [
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(steps, "steps"),
            typed,
            scalar,
            _as_external(numpy_helper.from_array(weights, "outside")),
        ]
    )
    found = {t.name: t for t in raw_initializers(_model(graph))}
    assert set(found) == {"W", "weights", "steps", "scalar"}  # no typed fields, no external
    assert (found["weights"].data_type, found["weights"].dims) == (TensorProto.FLOAT, (2, 3))
    assert bytes(found["weights"].raw) == weights.tobytes()
    assert (found["steps"].data_type, bytes(found["steps"].raw)) == (
        TensorProto.INT64,
        steps.tobytes(),
    )
    assert found["scalar"].dims == ()
    assert bytes(found["scalar"].raw) == scalar.raw_data


def test_initializers_inside_if_branches_are_not_listed() -> None:
    """Only the main graph's: a branch's tensors stay with the branch."""
    branch = _matmul_graph(_weight("inner"), "branch")
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "g", [cond], [y], [_weight("outer")])
    assert [t.name for t in raw_initializers(_model(graph))] == ["outer"]
    assert has_subgraphs(_model(graph))
    assert not has_subgraphs(_model(_matmul_graph(_weight())))


def test_a_graph_with_its_own_weights_has_no_external_tensors() -> None:
    assert external_tensors(_model(_matmul_graph(_weight()))) == []


def test_the_signature_is_read_as_onnx_declares_it() -> None:
    """Initializers listed as inputs (older exporters) are defaults, not inputs to feed."""
    graph = _matmul_graph(_weight("W"))
    graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [2, 2]))
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    inputs, outputs = graph_signature(_model(graph))
    assert [(t.name, t.dtype, t.shape) for t in inputs] == [("x", "float32", ("batch", 2))]
    assert [(t.name, t.dtype, t.shape) for t in outputs] == [("y", "float32", (1, 2))]


def test_an_external_initializer_is_found() -> None:
    assert external_tensors(_model(_matmul_graph(_as_external(_weight("W"))))) == ["W"]


def test_a_constant_node_with_external_data_is_found() -> None:
    const = helper.make_node("Constant", [], ["W"], value=_as_external(_weight("c")))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([const, helper.make_node("MatMul", ["x", "W"], ["y"])], "g", [x], [y])
    assert external_tensors(_model(graph)) == ["c"]


def test_an_external_tensor_inside_an_if_branch_is_found() -> None:
    """The switch graph keeps its variants in If branches: their weights are looked at too."""
    branch = _matmul_graph(_as_external(_weight("inner")), "then")
    branch.ClearField("input")
    other = _matmul_graph(_weight("plain"), "else")
    other.ClearField("input")
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)
    graph = helper.make_graph([node], "g", [cond, x], [y])
    assert external_tensors(_model(graph)) == ["inner"]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x3a\x10abc", "runs past the end"),  # graph field says 16 bytes, 3 follow
        (b"\xff\xff\xff", "varint"),
        (b"\x3b", "wire type 3"),
    ],
)
def test_bytes_that_are_not_protobuf_are_a_wire_error(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        external_tensors(data)


def test_graphs_nested_without_end_are_refused() -> None:
    """A hostile file nesting If bodies thousands deep must not exhaust the stack."""
    data = b""  # a graph; wrapped as graph -> node -> attribute(g) -> graph ...
    for _ in range(100):
        attribute = b"\x32" + _length(data) + data  # AttributeProto.g
        node = b"\x2a" + _length(attribute) + attribute  # NodeProto.attribute
        data = b"\x0a" + _length(node) + node  # GraphProto.node
    model = b"\x3a" + _length(data) + data
    with pytest.raises(WireError, match="nested more than"):
        external_tensors(model)


def _length(data: bytes) -> bytes:
    out, n = b"", len(data)
    while True:
        low, n = n & 0x7F, n >> 7
        out += bytes([low | (0x80 if n else 0)])
        if not n:
            return out


def _rewrite(fresh_artifact: Any, name: str, edit: Any) -> Path:
    path = fresh_artifact.path / name
    model = onnx.load(path)
    edit(model)
    onnx.save(model, path)
    write_manifest(fresh_artifact.path, fresh_artifact.manifest)  # the hashes now match
    return path


def _infer_all(path: Path) -> None:
    BudgetRuntime.load(path, backend="onnxruntime")  # every graph is checked at load


def test_load_refuses_a_graph_with_external_weights(fresh_artifact: Any) -> None:
    """Side files are not hashed: zeroing one once changed the logits silently."""
    path = fresh_artifact.path / "head.onnx"
    model = onnx.load(path)
    onnx.save(model, path, save_as_external_data=True, location="head.bin", size_threshold=0)
    write_manifest(fresh_artifact.path, fresh_artifact.manifest)
    with pytest.raises(ManifestError, match="graph 'head' .* external data"):
        _infer_all(fresh_artifact.path)


def test_load_refuses_swapped_graphs_with_the_same_names(fresh_artifact: Any) -> None:
    """block2's graph in block0's place: same input and output names, other shapes."""
    shutil.copyfile(fresh_artifact.path / "block2_p0.onnx", fresh_artifact.path / "block0_p0.onnx")
    write_manifest(fresh_artifact.path, fresh_artifact.manifest)
    with pytest.raises(ManifestError, match="block0_p0.* tensor 'x' .* manifest says"):
        _infer_all(fresh_artifact.path)


def test_load_refuses_a_graph_whose_output_was_renamed(fresh_artifact: Any) -> None:
    def rename(model: onnx.ModelProto) -> None:
        for node in model.graph.node:
            node.output[:] = ["logits" if o == "y" else o for o in node.output]
        model.graph.output[0].name = "logits"

    _rewrite(fresh_artifact, "head.onnx", rename)
    with pytest.raises(ManifestError, match="graph 'head' .* outputs \\['logits'\\] .*'y'"):
        _infer_all(fresh_artifact.path)


def test_load_refuses_a_graph_of_another_element_type(fresh_artifact: Any) -> None:
    def to_double(model: onnx.ModelProto) -> None:
        model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE

    _rewrite(fresh_artifact, "stem.onnx", to_double)
    with pytest.raises(ManifestError, match="graph 'stem'"):
        _infer_all(fresh_artifact.path)
