"""Tracing, weight reuse between graphs of one structure, chaining, graph checks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from budget_edge.errors import ConfigError
from budget_edge.export.exporter import variant_path_sets, variant_scheme
from budget_edge.export.onnx_export import (
    GraphExporter,
    chain_graphs,
    check_graph,
    structure_key,
    tensor_specs,
    trace_to_onnx,
)

from .conftest import close


class Tiny(nn.Module):
    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.linear = nn.Linear(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = session_of(model)
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def session_of(model: onnx.ModelProto):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_one_trace_serves_every_module_of_that_structure():
    fresh = GraphExporter()
    x = torch.randn(2, 4, 5, 5)
    a, b = Tiny().eval(), Tiny().eval()
    with torch.no_grad():
        b.conv.bias.zero_()  # a zero bias must not be optimised away in the shared graph
    first = fresh.export(a, (x,), ["x"], ["y"])
    second = fresh.export(b, (x,), ["x"], ["y"])
    assert (fresh.traced, fresh.reused) == (1, 1)
    x5 = torch.randn(5, 4, 5, 5)
    with torch.no_grad():
        close(run(first, x5.numpy()), a(x5))
        close(run(second, x5.numpy()), b(x5))
    check_graph(second, "tiny")
    assert [t.shape for t in tensor_specs(second.graph.input)] == [["batch", 4, 5, 5]]


class Unexportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this module cannot run")


def test_exports_share_torchs_registry_and_give_torch_its_builder_back():
    """The exporter caches torch's ATen-to-ONNX table across graphs by swapping a
    private builder: a second export must hit the cache (a torch upgrade that moves the
    builder shows here), and a user's own torch.onnx.export later, even after a failed
    export, must get torch's builder again."""
    from torch.onnx._internal.exporter import _registration

    from budget_edge.export import onnx_export

    builder = _registration.ONNXRegistry.__dict__["from_torchlib"]
    assert builder.__func__.__module__ == _registration.__name__  # torch's own, to start
    x = np.ones((2, 4, 5, 5), np.float32)
    trace_to_onnx(Tiny(), [torch.zeros(1, 4, 5, 5)], ["x"], ["y"])
    hits = onnx_export._torchlib_registry.cache_info().hits
    assert run(trace_to_onnx(Tiny(), [torch.zeros(1, 4, 5, 5)], ["x"], ["y"]), x).shape == (2, 3)
    assert onnx_export._torchlib_registry.cache_info().hits == hits + 1
    with pytest.raises(ConfigError, match="torch.onnx cannot export Unexportable"):
        trace_to_onnx(Unexportable(), [torch.zeros(1, 4)], ["x"], ["y"])
    assert _registration.ONNXRegistry.__dict__["from_torchlib"] is builder


def test_structure_key_tells_input_shapes_and_layers_apart():
    m, small, large = Tiny(), [torch.zeros(1, 4, 5, 5)], [torch.zeros(1, 4, 6, 6)]
    assert structure_key(m, small) != structure_key(m, large)
    assert structure_key(m, small) != structure_key(Tiny(8), small)
    assert structure_key(Tiny(), small) == structure_key(m, small)


def _graph(nodes, inputs, outputs, inits=()):
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 8
    return model


def _value(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_chain_joins_graphs_in_order():
    one = numpy_helper.from_array(np.ones(3, np.float32), "one")
    add = _graph(
        [helper.make_node("Add", ["a", "one"], ["b"])],
        [_value("a", ["batch", 3])],
        [_value("b", ["batch", 3])],
        [one],
    )
    relu = _graph(
        [helper.make_node("Relu", ["a"], ["b"])],
        [_value("a", ["batch", 3])],
        [_value("b", ["batch", 3])],
    )
    chained = chain_graphs([add, relu, add], "image", "logits")
    onnx.checker.check_model(chained, full_check=True)
    x = np.array([[-3.0, 0.5, 2.0]], np.float32)
    np.testing.assert_allclose(run(chained, x), np.maximum(x + 1, 0) + 1)
    assert [i.name for i in chained.graph.input] == ["image"]
    assert [o.name for o in chained.graph.output] == ["logits"]


def test_graphs_with_batchnorm_or_a_fixed_batch_are_refused():
    bn_inits = [numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("s", "b", "m", "v")]
    bn = _graph(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
        [_value("x", ["batch", 2, 3, 3])],
        [_value("y", ["batch", 2, 3, 3])],
        bn_inits,
    )
    with pytest.raises(ConfigError, match="BatchNormalization"):
        check_graph(bn, "bn")
    fixed = _graph(
        [helper.make_node("Relu", ["x"], ["y"])], [_value("x", [1, 2])], [_value("y", [1, 2])]
    )
    with pytest.raises(ConfigError, match="no dynamic batch axis"):
        check_graph(fixed, "fixed")


def test_non_float_tensors_are_refused_in_the_manifest():
    value = helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", 3])
    with pytest.raises(ConfigError, match="float32 and float16"):
        tensor_specs([value])


@pytest.mark.parametrize(
    "paths, scheme, count",
    [(1, "single", 1), (2, "all", 3), (4, "all", 15), (5, "prefix", 5), (32, "prefix", 32)],
)
def test_variant_scheme_keeps_the_file_count_sane(paths, scheme, count):
    assert variant_scheme(paths) == scheme
    sets = variant_path_sets(paths)
    assert len(sets) == count
    assert sets[-1] == list(range(paths))
    if scheme == "prefix":
        assert sets == [list(range(m)) for m in range(1, paths + 1)]
    if scheme == "all":
        assert sorted(map(tuple, sets)) == sorted(
            {tuple(p for p in range(paths) if bits >> p & 1) for bits in range(1, 2**paths)}
        )


def test_an_opset_no_tool_here_writes_is_refused_before_any_work(tmp_path) -> None:
    from budget_edge.export.exporter import export_checkpoint
    from budget_edge.export.onnx_export import check_opset

    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(ConfigError, match=rf"--opset 99: .* writes opsets 18 to {newest}"):
        check_opset(99)
    with pytest.raises(ConfigError, match="--opset 17"):
        check_opset(17)
    # The checkpoint does not exist: the opset is refused before it is even read.
    with pytest.raises(ConfigError, match="--opset 99"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "art", opset=99)
    assert not (tmp_path / "art").exists()
