"""Write budget_edge/runtime/device_graphs.py: the three tiny ONNX graphs the runtime runs
where its tensors live (GPU), serialized, so that the runtime needs no `onnx` package.

    python tools/device_graphs.py      # after changing a graph here

tests/runtime/test_device_graphs.py checks that the module holds exactly these graphs.
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OUT = Path(__file__).resolve().parents[1] / "budget_edge" / "runtime" / "device_graphs.py"


def _model(
    name: str,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    check: bool = True,
) -> onnx.ModelProto:
    model = helper.make_model(
        helper.make_graph(nodes, name, inputs, outputs),
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="budget-edge",
    )
    model.ir_version = 8
    if check:  # the row graphs take tensors of any rank, which onnx.checker cannot express
        onnx.checker.check_model(model, full_check=True)
    return model


def gather_rows() -> onnx.ModelProto:
    """out = data[rows] (rows of the first axis)."""
    return _model(
        "gather_rows",
        [helper.make_node("Gather", ["data", "rows"], ["out"], axis=0)],
        [
            helper.make_tensor_value_info("data", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("rows", TensorProto.INT64, ["k"]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        check=False,
    )


def scatter_rows() -> onnx.ModelProto:
    """out = data with out[rows[i, 0]] = updates[i]."""
    return _model(
        "scatter_rows",
        [helper.make_node("ScatterND", ["data", "rows", "updates"], ["out"])],
        [
            helper.make_tensor_value_info("data", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("rows", TensorProto.INT64, ["k", 1]),
            helper.make_tensor_value_info("updates", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        check=False,
    )


def preprocess() -> onnx.ModelProto:
    """uint8 NHWC pixels -> float32 NCHW image = pixels * scale - shift, with scale =
    1 / (255 std) and shift = mean / std per channel, each shaped (1, C, 1, 1)."""
    nodes = [
        helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["as_float"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "shift"], ["image"]),
    ]
    return _model(
        "preprocess",
        nodes,
        [
            helper.make_tensor_value_info(
                "pixels", TensorProto.UINT8, ["batch", "height", "width", "channels"]
            ),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1, "channels", 1, 1]),
            helper.make_tensor_value_info("shift", TensorProto.FLOAT, [1, "channels", 1, 1]),
        ],
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["batch", "channels", "height", "width"]
            )
        ],
    )


GRAPHS = {"GATHER_ROWS": gather_rows, "SCATTER_ROWS": scatter_rows, "PREPROCESS": preprocess}


def module_text() -> str:
    lines = [
        '"""Three tiny ONNX graphs, serialized: the runtime runs them where its tensors',
        "live (on the GPU) and needs no `onnx` package for it. Written by",
        "tools/device_graphs.py, which says what each computes; do not edit by hand.",
        '"""',
        "",
        "import base64",
        "",
    ]
    for name, build in GRAPHS.items():
        encoded = base64.b64encode(build().SerializeToString()).decode()
        body = textwrap.wrap(encoded, 88)
        lines.append(f"{name} = base64.b64decode(")
        lines += [f'    "{chunk}"' for chunk in body]
        lines.append(")")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    OUT.write_text(module_text())
    print(OUT)
