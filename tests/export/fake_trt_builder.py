"""A stand-in for TensorRT's builder API, shaped like a given version's Python bindings.

The member names follow NVIDIA's binding wheels (tensorrt-cu12-bindings 10.3.0 and
11.4.0.106, read from their tensorrt.so): TensorRT 11 has no BuilderFlag.FP16 or
INT8, no INT8 calibrators, no set_calibration_profile and no platform_has_fast_*,
so code that touches them fails here as it would on the device. Strongly typed
networks refuse precision flags, as TensorRT does. Builds record what they were
given and return the ONNX file's name as the "engine".
"""

from __future__ import annotations

import enum
import types
from pathlib import Path
from typing import Any

import onnx

STRONGLY_TYPED_BIT = 1


class _Dims(list):  # type: ignore[type-arg]
    pass


class _Tensor:
    def __init__(self, value: onnx.ValueInfoProto) -> None:
        self.name = value.name
        dims = value.type.tensor_type.shape.dim
        self.shape = _Dims(-1 if d.dim_param else d.dim_value for d in dims)


class _Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs: list[_Tensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[list[int], list[int], list[int]]] = {}

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        self.shapes[name] = (list(lo), list(opt), list(hi))


class _Cache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+"


class _Config:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.cleared: set[str] = set()
        self.profiles: list[_Profile] = []
        self.pool: dict[Any, int] = {}

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.pool[pool] = size

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag.name)

    def clear_flag(self, flag: Any) -> None:
        self.cleared.add(flag.name)

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> _Cache:
        return _Cache(bytes(data))

    def set_timing_cache(self, cache: _Cache, ignore_mismatch: bool) -> bool:
        return True


def make_fake_trt_builder(version: str, fast_fp16: bool = True) -> types.ModuleType:
    """A `tensorrt` module with the builder API of `version` ("10.3.0" or "11.4.0")."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.builds = []  # type: ignore[attr-defined]  # (network, config, onnx path) per build
    flags = ["TF32", "REFIT", "STRIP_PLAN"] + (["FP16", "INT8"] if major == 10 else [])
    trt.BuilderFlag = enum.Enum("BuilderFlag", flags)  # type: ignore[attr-defined]
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(  # type: ignore[attr-defined]
        "NetworkDefinitionCreationFlag",
        {"STRONGLY_TYPED": STRONGLY_TYPED_BIT} | ({"EXPLICIT_BATCH": 0} if major == 10 else {}),
    )
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE"])  # type: ignore[attr-defined]
    trt.Dims = _Dims  # type: ignore[attr-defined]

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    class OnnxParser:
        def __init__(self, network: _Network, logger: Logger) -> None:
            self.network = network
            self.errors: list[str] = []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> str:
            return self.errors[index]

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            # As TensorRT's parser: a Dequantize reads int8 or fp8 (10.13 and 11 also int4
            # and fp4), never int32 or uint8; such a graph is refused whole.
            readable = {onnx.TensorProto.INT8, onnx.TensorProto.FLOAT8E4M3FN}
            if major >= 11:
                readable |= {onnx.TensorProto.INT4, onnx.TensorProto.FLOAT4E2M1}
            weights = {t.name: t.data_type for t in model.graph.initializer}
            for node in model.graph.node:
                if (
                    node.op_type == "DequantizeLinear"
                    and weights.get(node.input[0], onnx.TensorProto.INT8) not in readable
                ):
                    self.errors.append(f"{node.name}: Dequantize input type is not supported")
            if self.errors:
                return False
            self.network.inputs = [_Tensor(v) for v in model.graph.input]
            self.network.path = path  # type: ignore[attr-defined]
            return True

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> _Network:
            return _Network(flags)

        def create_builder_config(self) -> _Config:
            return _Config()

        def create_optimization_profile(self) -> _Profile:
            return _Profile()

        def build_serialized_network(self, network: _Network, config: _Config) -> bytes:
            strongly_typed = network.flags >> STRONGLY_TYPED_BIT & 1
            if strongly_typed and config.flags & {"FP16", "INT8"}:
                return None  # type: ignore[return-value]  # TensorRT logs the error, builds nothing
            trt.builds.append((network, config, network.path))  # type: ignore[attr-defined]
            return Path(network.path).name.encode()  # type: ignore[attr-defined]

    if major == 10:
        Builder.platform_has_fast_fp16 = fast_fp16  # type: ignore[attr-defined]
        Builder.platform_has_fast_int8 = fast_fp16  # type: ignore[attr-defined]

    trt.Logger = Logger  # type: ignore[attr-defined]
    trt.OnnxParser = OnnxParser  # type: ignore[attr-defined]
    trt.Builder = Builder  # type: ignore[attr-defined]
    return trt
