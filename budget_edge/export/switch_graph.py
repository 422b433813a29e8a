"""The `switch` graph: the whole backbone in one ONNX graph, each block behind an If.

Inputs: `image` (batch, C, H, W) and `codes` (blocks,) int64, one kept-path code
per block (bit j set: path j kept; 0: the block is dropped), shared by every
image of the call. Output: `logits`. Block b runs as

    If(codes[b] == code of variant 1) then variant 1
    else If(codes[b] == code of variant 2) then variant 2 ... else skip (or identity)

so one session call runs any mask the artifact can run. Why: with a graph per
block, ONNX Runtime pays a session call, a Python round trip and a blocked-layout
reorder at every block boundary; on the 2-core dev CPU that put the runtime
above the static graph at c >= 0.5 on ResNet-20 (batch 1). The switch graph
costs what a graph fused for that one mask costs (measured side by side in
`benchmarks/results/switch-graph/`), without a graph per mask.

The branches are the artifact's own stem, variant, skip and head graphs,
renamed and nested, so the switch graph has exactly their operators and
weights (like `chain_graphs` for the static model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import onnx
from onnx import TensorProto, helper

from budget_edge.runtime.manifest import BlockSpec

IMAGE = "image"
CODES = "codes"
LOGITS = "logits"


def switch_graph(
    models: Mapping[str, onnx.ModelProto],
    blocks: Sequence[BlockSpec],
    stem: str = "stem",
    head: str = "head",
) -> onnx.ModelProto:
    """Build the switch graph from the artifact's exported graphs (`models` by name)."""
    first = models[stem]
    nodes, initializers = _inline(first, "stem_", IMAGE)
    current = _output_name(first, "stem_")
    for block in blocks:
        block_nodes, block_inits, current = _block(models, block, current)
        nodes += block_nodes
        initializers += block_inits
    head_nodes, head_inits = _inline(models[head], "head_", current, LOGITS)
    nodes += head_nodes
    initializers += head_inits

    image = onnx.ValueInfoProto()
    image.CopyFrom(first.graph.input[0])
    image.name = IMAGE
    codes = helper.make_tensor_value_info(CODES, TensorProto.INT64, [len(blocks)])
    logits = onnx.ValueInfoProto()
    logits.CopyFrom(models[head].graph.output[0])
    logits.name = LOGITS
    graph = helper.make_graph(nodes, "switch", [image, codes], [logits], initializer=initializers)
    model = helper.make_model(graph, opset_imports=_opsets(models.values()))
    model.ir_version = first.ir_version
    return model


def _opsets(models: Iterable[onnx.ModelProto]) -> list[onnx.OperatorSetIdProto]:
    """Every domain any part imports, at the highest version (quantized parts may add one)."""
    versions: dict[str, int] = {}
    for model in models:
        for op in model.opset_import:
            versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    return [helper.make_opsetid(domain, v) for domain, v in sorted(versions.items())]


def _block(
    models: Mapping[str, onnx.ModelProto], block: BlockSpec, x: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Nodes of one block: its code, one Equal per variant, the nested Ifs."""
    b = block.index
    code = f"code{b:03d}"
    nodes = [helper.make_node("Gather", [CODES, f"{code}_index"], [code], axis=0)]
    initializers = [helper.make_tensor(f"{code}_index", TensorProto.INT64, [], [b])]
    variants = []
    for v in block.variants:
        value = sum(1 << p for p in v.paths)
        is_v = f"{code}_is{value}"
        initializers.append(helper.make_tensor(f"{is_v}_value", TensorProto.INT64, [], [value]))
        nodes.append(helper.make_node("Equal", [code, f"{is_v}_value"], [is_v]))
        variants.append((is_v, v.graph))
    out = f"block{b:03d}_out"
    # Innermost first: the skip (a graph, or identity), then each variant around it.
    branch = _skip_branch(models, block.skip, x, f"b{b:03d}_skip")
    for depth, (is_v, graph) in enumerate(reversed(variants)):
        last = depth == len(variants) - 1
        then = _graph_branch(models[graph], x, f"b{b:03d}_v{depth}")
        name = out if last else f"b{b:03d}_else{depth}_out"
        node = helper.make_node("If", [is_v], [name], then_branch=then, else_branch=branch)
        if last:
            nodes.append(node)
        else:
            branch = helper.make_graph([node], f"b{b:03d}_else{depth}", [], [_untyped(name)])
    return nodes, initializers, out


def _graph_branch(model: onnx.ModelProto, x: str, prefix: str) -> onnx.GraphProto:
    """A subgraph running `model` on the outer value `x`."""
    nodes, initializers = _inline(model, f"{prefix}_", x)
    out = _output_name(model, f"{prefix}_")
    return helper.make_graph(nodes, prefix, [], [_untyped(out)], initializer=initializers)


def _skip_branch(
    models: Mapping[str, onnx.ModelProto], skip: str | None, x: str, prefix: str
) -> onnx.GraphProto:
    if skip is not None:
        return _graph_branch(models[skip], x, prefix)
    out = f"{prefix}_identity"
    return helper.make_graph(
        [helper.make_node("Identity", [x], [out])], prefix, [], [_untyped(out)]
    )


def _inline(
    model: onnx.ModelProto, prefix: str, input_name: str, output_name: str | None = None
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """`model`'s nodes and weights with every name prefixed, reading `input_name`."""
    renamed = onnx.compose.add_prefix(model, prefix)
    rename = {renamed.graph.input[0].name: input_name}
    if output_name is not None:
        rename[renamed.graph.output[0].name] = output_name
    nodes = []
    for node in renamed.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
        nodes.append(node)
    return nodes, list(renamed.graph.initializer)


def _output_name(model: onnx.ModelProto, prefix: str) -> str:
    return prefix + model.graph.output[0].name


def _untyped(name: str) -> onnx.ValueInfoProto:
    # Branch outputs carry their element type; shapes differ per branch only in
    # name, and ONNX Runtime infers them.
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
