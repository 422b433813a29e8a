"""Which explicit-quantization (Q/DQ) graphs TensorRT's ONNX parser takes.

TensorRT's Dequantize layer reads int8 or fp8 (TensorRT 10.3; 10.13 and 11.x
add int4 and fp4), and its Quantize layer writes them: an INT32 bias behind a
DequantizeLinear (ONNX Runtime's quantizer writes one for every Conv and Gemm
unless told not to) or a uint8 zero point makes the parser refuse the whole
graph, on the device, after the workstation's work is done. `build-engines`
checks each graph with this first and says which node to fix, in one line.
"""

from __future__ import annotations

import onnx

# Types every supported TensorRT version (10.3 to 11.x) reads and writes in Q/DQ.
TENSORRT_QDQ_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.FLOAT8E4M3FN}


def _type_name(data_type: int) -> str:
    return str(onnx.TensorProto.DataType.Name(data_type))


def tensorrt_qdq_problems(model: onnx.ModelProto) -> list[str]:
    """One line per Q/DQ node TensorRT's parser would refuse; [] when it takes them all."""
    initializers = {t.name: t.data_type for t in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            data_type = initializers[node.input[0]]
            if data_type not in TENSORRT_QDQ_TYPES:
                problems.append(
                    f"DequantizeLinear {node.name!r} reads {_type_name(data_type)} "
                    f"{node.input[0]!r}"
                )
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            data_type = initializers.get(node.input[2], onnx.TensorProto.INT8)
            if data_type not in TENSORRT_QDQ_TYPES:
                problems.append(
                    f"QuantizeLinear {node.name!r} writes {_type_name(data_type)} "
                    f"(zero point {node.input[2]!r})"
                )
    return problems
