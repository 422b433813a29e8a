"""The `allocate_switch` graph: mode ``allocate`` for one image in one session call.

Inputs: `image` (1, C, H, W) and `level` (1,) int64, the row of the artifact's
calibrated price table that the budget falls in (runtime/allocation.py,
`price_levels`). Outputs: `logits` (1, classes), `mask` (1, K) float 0/1 and
`probs` (1, K), the agent's probabilities behind the mask. Inside:

    chances, level_probs = allocator(image)
    count = argmax_k chances[k] - price[level] * k / K      (in float64, as on the host)
    probs = level_probs[count]; mask = the `count` highest probs (ties: lower index)
    codes = mask @ W (each block's kept-path code)
    logits = switch(image, codes)

Why: with the allocator graph, the choice on the host and the backbone as
separate calls, a ResNet-20 image paid two session calls, a dozen numpy calls
and, worse, a new whole-mask graph per image whose weights were out of cache
(`benchmarks/results/bench-resnet20-allocate/`: slower than the static graph
from c = 0.5). One graph keeps one copy of the weights and one call.

The codes are shared by the whole call, so the graph is for one image: the
runtime calls it only at batch 1 (larger batches group images by mask). Blocks
exported with prefix path sets only cannot run an arbitrary kept-path set, so
such artifacts get no `allocate_switch` graph (see `can_compose`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from budget_edge.export.switch_graph import CODES, IMAGE, merged_opsets
from budget_edge.runtime.manifest import BlockSpec, ComponentSpec
from budget_edge.runtime.masks import code_matrix

LEVEL = "level"
MASK = "mask"
PROBS = "probs"
_PREFIX = "allocator/"


def can_compose(blocks: Sequence[BlockSpec]) -> bool:
    """Every kept-path set must have a graph (no 'prefix' block)."""
    return all(b.variant_scheme != "prefix" for b in blocks)


def allocate_switch_graph(allocator: onnx.ModelProto, switch: onnx.ModelProto,
                          components: Sequence[ComponentSpec], num_blocks: int,
                          prices: Sequence[float]) -> onnx.ModelProto:
    """Compose the graph from the artifact's allocator and switch graphs."""
    k = len(components)
    weights = code_matrix(components, num_blocks)
    renamed = onnx.compose.add_prefix(allocator, _PREFIX)
    chances, level_probs = (o.name for o in renamed.graph.output)
    nodes = [helper.make_node("Identity", [IMAGE], [renamed.graph.input[0].name])]
    nodes += list(renamed.graph.node)
    initializers = list(renamed.graph.initializer)
    choice, choice_inits = _choice_nodes(chances, level_probs, k, weights, prices)
    nodes += choice
    initializers += choice_inits + list(switch.graph.initializer)
    nodes += list(switch.graph.node)

    image = onnx.ValueInfoProto()
    image.CopyFrom(switch.graph.input[0])
    logits = onnx.ValueInfoProto()
    logits.CopyFrom(switch.graph.output[0])
    inputs = [image, helper.make_tensor_value_info(LEVEL, TensorProto.INT64, [1])]
    outputs = [logits,
               helper.make_tensor_value_info(MASK, TensorProto.FLOAT, ["batch", k]),
               helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, ["batch", k])]
    graph = helper.make_graph(nodes, "allocate_switch", inputs, outputs,
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=merged_opsets([allocator, switch]))
    model.ir_version = max(allocator.ir_version, switch.ir_version)
    return model


def _choice_nodes(chances: str, level_probs: str, k: int, weights: np.ndarray,
                  prices: Sequence[float]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The host's `allocation.allocated_masks` for one image, as ONNX nodes -> CODES."""
    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, f"choice/{name}"))
        return f"choice/{name}"

    inits: list[onnx.TensorProto] = []
    prices_c = const("prices", np.asarray(prices, np.float64))
    levels_c = const("levels", (np.arange(k + 1, dtype=np.float64) / k).reshape(1, k + 1))
    axis1 = const("axis1", np.array([1], np.int64))
    count_k = const("k", np.array([k], np.int64))
    ranks = const("ranks", np.arange(k, dtype=np.int64).reshape(1, k))
    zeros = const("zeros", np.zeros((1, k), np.float32))
    weights_c = const("weights", weights.astype(np.float32))  # codes < 2^24: exact in float
    flat = const("flat", np.array([-1], np.int64))

    def n(op: str, ins: list[str], out: str, **attrs: Any) -> onnx.NodeProto:
        return helper.make_node(op, ins, [f"choice/{out}"], **attrs)

    nodes = [
        n("Gather", [prices_c, LEVEL], "price", axis=0),  # (1,)
        n("Unsqueeze", ["choice/price", axis1], "price2"),  # (1, 1)
        n("Mul", ["choice/price2", levels_c], "penalty"),
        n("Cast", [chances], "chances64", to=TensorProto.DOUBLE),
        n("Sub", ["choice/chances64", "choice/penalty"], "gain"),
        n("ArgMax", ["choice/gain"], "count", axis=1, keepdims=0),  # first max: fewer kept
        n("Gather", [level_probs, "choice/count"], "probs3", axis=1),  # (1, 1, K)
        helper.make_node("Squeeze", ["choice/probs3", axis1], [PROBS]),
        # TopK sorts ties by lower index first, like the host's stable argsort.
        helper.make_node("TopK", [PROBS, count_k], ["choice/top_values", "choice/order"],
                         axis=1, largest=1, sorted=1),
        n("Unsqueeze", ["choice/count", axis1], "count2"),
        n("Less", [ranks, "choice/count2"], "kept_rank"),
        n("Cast", ["choice/kept_rank"], "kept_rank_f", to=TensorProto.FLOAT),
        helper.make_node("ScatterElements", [zeros, "choice/order", "choice/kept_rank_f"],
                         [MASK], axis=1),
        n("MatMul", [MASK, weights_c], "codes_f"),
        n("Cast", ["choice/codes_f"], "codes2", to=TensorProto.INT64),
        helper.make_node("Reshape", ["choice/codes2", flat], [CODES]),
    ]
    return nodes, inits
