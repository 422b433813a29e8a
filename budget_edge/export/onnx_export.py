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

import contextlib
import copy
import functools
import io
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, fx, nn

from budget_edge.errors import BudgetEdgeError, ConfigError
from budget_edge.files import atomic_write_bytes
from budget_edge.runtime.manifest import BATCH_AXIS, TensorSpec

DEFAULT_OPSET = 18
ONNX_DTYPES: dict[int, str] = {
    int(onnx.TensorProto.FLOAT): "float32",
    int(onnx.TensorProto.FLOAT16): "float16",
    int(onnx.TensorProto.INT64): "int64",  # control inputs only (the switch graph's codes)
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
    # The exporter logs that torchvision's detection ops are missing: not our concern.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in example)
    # The exporter prints progress and FutureWarnings of its own; keep the CLI quiet.
    with (
        warnings.catch_warnings(),
        redirect_stdout(io.StringIO()),
        _export_errors(type(module).__name__, opset),
        _one_torchlib_registry(),
    ):
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


@functools.lru_cache(maxsize=4)
def check_opset(opset: int) -> None:
    """Refuse an opset this machine cannot write, or ONNX Runtime cannot run, before the
    export starts: a one-convolution graph goes the whole way (about a second)."""
    newest = onnx.defs.onnx_opset_version()
    if not DEFAULT_OPSET <= opset <= newest:
        raise ConfigError(
            f"--opset {opset}: this machine's onnx {onnx.__version__} writes "
            f"opsets {DEFAULT_OPSET} to {newest}"
        )
    probe = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU())
    model = trace_to_onnx(probe, [torch.zeros(1, 1, 2, 2)], ["x"], ["y"], opset)
    try:
        import onnxruntime as ort
    except ImportError:
        return  # nothing here runs graphs; the device checks on load
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 (ORT raises its own types for an unknown opset)
        detail = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise ConfigError(
            f"--opset {opset}: ONNX Runtime {ort.__version__} cannot run it "
            f"({detail[:160]}); use a lower opset, such as {DEFAULT_OPSET}"
        ) from exc


@functools.lru_cache(maxsize=4)
def _torchlib_registry(build: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return build(*args, **kwargs)


def _copy_of_registry(build: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A copy of the cached table (milliseconds), so that a caller who registers its own
    functions in it (torch.onnx.export's custom_translation_table) changes only its copy."""
    try:
        registry = copy.copy(_torchlib_registry(build, *args, **kwargs))
        registry.functions = {op: list(metas) for op, metas in registry.functions.items()}
    except Exception:  # noqa: BLE001 (torch's private layout moved: build as torch does)
        return build(*args, **kwargs)
    return registry


# One patched export at a time: two overlapping ones would restore each other's patch.
_REGISTRY_LOCK = threading.Lock()


@contextlib.contextmanager
def _one_torchlib_registry() -> Iterator[None]:
    """Build torch's table of ATen-to-ONNX functions once per opset, not once per graph.

    torch.onnx.export rebuilds it on every call by reading the source of about 6,000
    onnxscript functions: 0.65 s of each graph's 1.7 s here. Each export gets its own
    copy of the cached table. The table's builder is private to torch: where it has
    moved, every export builds its own, as before.
    """
    try:
        from torch.onnx._internal.exporter._registration import ONNXRegistry
    except ImportError:
        yield
        return
    original = ONNXRegistry.__dict__.get("from_torchlib")
    if not isinstance(original, classmethod):
        yield
        return
    build = original.__get__(None, ONNXRegistry)

    def shared(cls: type, *args: Any, **kwargs: Any) -> Any:
        return _copy_of_registry(build, *args, **kwargs)

    with _REGISTRY_LOCK:
        ONNXRegistry.from_torchlib = classmethod(shared)  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            ONNXRegistry.from_torchlib = original  # type: ignore[method-assign,assignment]


@contextlib.contextmanager
def _export_errors(what: str, opset: int) -> Iterator[None]:
    """torch's exporter and onnx's version converter raise many types: one line each."""
    try:
        yield
    except BudgetEdgeError:
        raise
    except Exception as exc:
        detail = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise ConfigError(
            f"torch.onnx cannot export {what} at opset {opset} "
            f"({type(exc).__name__}: {detail[:200]}): try the default opset "
            f"{DEFAULT_OPSET}"
        ) from exc


def _name_batch_axes(model: onnx.ModelProto) -> None:
    """Call the dynamic first axis of every input and output 'batch'."""
    for value in [*model.graph.input, *model.graph.output]:
        if value.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            continue  # a control input with a fixed shape, not a batch
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


def _random_twin(module: nn.Module) -> nn.Module:
    """A copy of `module` with every float weight drawn from U(0.5, 1.5).

    The exporter's optimiser looks at weight values (it drops an all-zero conv
    bias, say), so a graph traced from real weights may not fit other weights.
    Traced from weights that are never 0 or 1, the graph keeps every weight as
    its own initializer, and any block's weights can be put in by name.
    """
    twin = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in twin.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
    return twin


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
        """The graph of `module`. With `reuse`, the module must keep its weights as
        plain named parameters (BatchNorm already folded); the graph is then traced
        once per structure and filled with this module's weights."""
        if not reuse:
            self.traced += 1
            return trace_to_onnx(module, example, input_names, output_names, self.opset)
        key = f"{structure_key(module, example)}\n{list(input_names)}->{list(output_names)}"
        template = self._templates.get(key)
        if template is None:
            twin = _random_twin(module)
            template = trace_to_onnx(twin, example, input_names, output_names, self.opset)
            self._templates[key] = template
            self.traced += 1
        else:
            self.reused += 1
        model = with_weights(template, module)
        if model is None:
            raise RuntimeError(
                f"the traced graph of {type(module).__name__} does not keep its weights by "
                "name; export it with reuse=False"
            )
        return model


def chain_graphs(
    parts: Sequence[onnx.ModelProto], input_name: str, output_name: str
) -> onnx.ModelProto:
    """One graph that runs single-input single-output graphs one after another.

    The static `full` model and the hot-policy graphs are chains of graphs
    already exported (stem, block variants, head): joining them in ONNX costs
    milliseconds where tracing the whole network again costs seconds, and
    gives exactly the operators and weights of the parts.
    """
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    value_info: list[onnx.ValueInfoProto] = []
    previous = input_name
    for i, part in enumerate(parts):
        if len(part.graph.input) != 1 or len(part.graph.output) != 1:
            raise ValueError("chain_graphs takes graphs with one input and one output")
        part = onnx.compose.add_prefix(part, f"p{i:03d}_")
        start, end = part.graph.input[0].name, part.graph.output[0].name
        last = i == len(parts) - 1
        rename = {start: previous, **({end: output_name} if last else {})}
        for node in part.graph.node:
            node.input[:] = [rename.get(n, n) for n in node.input]
            node.output[:] = [rename.get(n, n) for n in node.output]
            nodes.append(node)
        initializers.extend(part.graph.initializer)
        value_info.extend(v for v in part.graph.value_info if v.name not in rename)
        if not last:
            middle = onnx.ValueInfoProto()
            middle.CopyFrom(part.graph.output[0])
            value_info.append(middle)
        previous = end
    first_input = onnx.ValueInfoProto()
    first_input.CopyFrom(parts[0].graph.input[0])
    first_input.name = input_name
    last_output = onnx.ValueInfoProto()
    last_output.CopyFrom(parts[-1].graph.output[0])
    last_output.name = output_name
    graph = onnx.helper.make_graph(
        nodes,
        "chain",
        [first_input],
        [last_output],
        initializer=initializers,
        value_info=value_info,
    )
    model = onnx.helper.make_model(graph, opset_imports=parts[0].opset_import)
    model.ir_version = parts[0].ir_version
    return model


def check_graph(model: onnx.ModelProto, name: str) -> None:
    """onnx.checker, no BatchNormalization left, and a dynamic batch on every input."""
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    if "BatchNormalization" in ops:
        raise ConfigError(
            f"graph {name} still has BatchNormalization nodes after folding: "
            "export the model in eval mode"
        )
    for value in [*model.graph.input, *model.graph.output]:
        if value.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            continue  # a control input with a fixed shape, not a batch
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
            raise ConfigError(
                f"{value.name} has ONNX element type {tensor.elem_type}: "
                "only float32 and float16 graphs are supported"
            )
        specs.append(TensorSpec(value.name, shape, dtype))
    return specs


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Write atomically: a temporary name in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, model.SerializeToString())
