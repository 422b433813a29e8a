"""Turn one torch module into one ONNX graph with a dynamic batch axis.

Uses the torch.export-based exporter (`dynamo=True`): in torch 2.13 the
TorchScript exporter still runs but warns that it will be removed, and its
graphs keep shape arithmetic around every Pad; the new exporter's graphs are
just the operators. It is slower (about a second per graph on a small CPU), so
`GraphExporter` traces each distinct block structure once and makes the other
blocks of that structure by swapping the weights into a copy of the graph:
ResNet-110's 54 blocks have 5 structures, a ResNeXt-29 block's 16 variants
have 5 (by kept-path count).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, fx, nn

from budget_edge.errors import ConfigError
from budget_edge.runtime.manifest import BATCH_AXIS, TensorSpec

DEFAULT_OPSET = 18
ONNX_DTYPES: dict[int, str] = {
    int(onnx.TensorProto.FLOAT): "float32",
    int(onnx.TensorProto.FLOAT16): "float16",
}


def trace_to_onnx(
    module: nn.Module,
    example: Sequence[Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Export `module` (in eval mode) with axis 0 of every input dynamic."""
    module.eval()
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in example)
    # The exporter prints progress and FutureWarnings of its own; keep the CLI quiet.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            tuple(example),
            dynamo=True,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic,
            verbose=False,
        )
    if program is None:  # only when writing to a file, which we never ask for
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto
    _name_batch_axes(model)
    return model


def _name_batch_axes(model: onnx.ModelProto) -> None:
    """Call the dynamic first axis of every input and output 'batch'."""
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_AXIS


def structure_key(module: nn.Module, example: Sequence[Tensor]) -> str:
    """Two modules with the same key trace to the same graph up to weight values.

    The key holds the module tree (layer hyperparameters), the weight shapes,
    the input shapes and, for fx-traced modules, the generated code, which
    carries the constants of parameter-free ops (a shortcut's padding, say).
    """
    shapes = [(name, tuple(t.shape), str(t.dtype)) for name, t in module.state_dict().items()]
    inputs = [(tuple(t.shape), str(t.dtype)) for t in example]
    code = module.code if isinstance(module, fx.GraphModule) else ""
    return f"{type(module).__name__}\n{module!r}\n{shapes}\n{inputs}\n{code}"


def with_weights(template: onnx.ModelProto, module: nn.Module) -> onnx.ModelProto | None:
    """A copy of `template` holding `module`'s weights, or None if the names do not line up."""
    state = {name: t.detach().cpu().numpy() for name, t in module.state_dict().items()}
    model = onnx.ModelProto()
    model.CopyFrom(template)
    replaced = 0
    for init in model.graph.initializer:
        if init.name in state:
            array = state[init.name]
            if tuple(init.dims) != array.shape:
                return None
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), init.name))
            replaced += 1
    # Every weight must be an initializer under its own name, else fall back to tracing.
    return model if replaced == len(state) else None


class GraphExporter:
    """Exports modules to ONNX, tracing each distinct structure only once."""

    def __init__(self, opset: int = DEFAULT_OPSET) -> None:
        self.opset = opset
        self.traced = 0
        self.reused = 0
        self._templates: dict[str, onnx.ModelProto] = {}

    def export(
        self,
        module: nn.Module,
        example: Sequence[Tensor],
        input_names: Sequence[str],
        output_names: Sequence[str],
        reuse: bool = True,
    ) -> onnx.ModelProto:
        key = f"{structure_key(module, example)}\n{list(input_names)}->{list(output_names)}"
        template = self._templates.get(key) if reuse else None
        if template is not None:
            model = with_weights(template, module)
            if model is not None:
                self.reused += 1
                return model
        model = trace_to_onnx(module, example, input_names, output_names, self.opset)
        self.traced += 1
        if reuse and with_weights(model, module) is not None:
            self._templates[key] = model
        return model


def check_graph(model: onnx.ModelProto, name: str) -> None:
    """onnx.checker, no BatchNormalization left, and a dynamic batch on every input."""
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    if "BatchNormalization" in ops:
        raise ConfigError(f"graph {name} still has BatchNormalization nodes after folding: "
                          "export the model in eval mode")
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].dim_param != BATCH_AXIS:
            raise ConfigError(f"graph {name}: {value.name} has no dynamic batch axis")


def tensor_specs(values: Sequence[onnx.ValueInfoProto]) -> list[TensorSpec]:
    """Manifest entries (name, shape with 'batch' first, dtype) of graph inputs or outputs."""
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        shape: list[int | str] = [d.dim_param or int(d.dim_value) for d in tensor.shape.dim]
        dtype = ONNX_DTYPES.get(tensor.elem_type)
        if dtype is None:
            raise ConfigError(f"{value.name} has ONNX element type {tensor.elem_type}: "
                              "only float32 and float16 graphs are supported")
        specs.append(TensorSpec(value.name, shape, dtype))
    return specs


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Write atomically: a temporary name in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, path)
