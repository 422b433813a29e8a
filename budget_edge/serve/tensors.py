"""Tensors of the Open Inference Protocol (v2) as numpy arrays, in JSON or in binary.

A tensor travels either as JSON (`"data"`: numbers in row-major order, flat or
nested) or, with Triton's binary tensor data extension, as raw little-endian
row-major bytes after the JSON header, announced by
`"parameters": {"binary_data_size": <bytes>}`. The binary sections follow the
header in the order of the tensors that have one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from budget_edge.serve.errors import RequestError

# Protocol datatype -> numpy dtype of its binary form (little-endian, native size).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

# Which kinds of JSON value (as numpy infers them) each kind of datatype accepts:
# booleans only for BOOL, integers for integer types, any number for floats.
_JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}


@dataclass(frozen=True)
class Tensor:
    """One named tensor of a request, with the shape the request declared."""

    name: str
    datatype: str
    array: np.ndarray


def parse_json(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request; NaN, Infinity and overflowing numbers are refused."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RequestError:
        raise
    except RecursionError as exc:
        raise RequestError("request JSON is nested too deeply: send flat tensor data") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(f"request body is not valid JSON ({exc}): send a JSON object") from exc
    if not isinstance(value, dict):
        raise RequestError(
            f"request JSON must be an object, got {type(value).__name__}: "
            'send {"inputs": [...]}'
        )
    return value


def _refuse_constant(name: str) -> float:
    raise RequestError(f"JSON constant {name} is not allowed: send finite numbers")


def decode_inputs(specs: Any, binary: bytes | memoryview) -> dict[str, Tensor]:
    """Decode the request's `inputs` list, taking binary sections from `binary` in order."""
    if not isinstance(specs, list) or not specs:
        raise RequestError('request needs "inputs": a non-empty list of tensors')
    tensors: dict[str, Tensor] = {}
    offset = 0
    for spec in specs:
        tensor, offset = _decode_tensor(spec, binary, offset)
        if tensor.name in tensors:
            raise RequestError(f"input {tensor.name!r} appears twice: send each input once")
        tensors[tensor.name] = tensor
    if offset != len(binary):
        raise RequestError(
            f"{len(binary) - offset} bytes of binary data follow the JSON header but no input "
            "claims them: check binary_data_size and Inference-Header-Content-Length"
        )
    return tensors


def _decode_tensor(spec: Any, binary: bytes | memoryview, offset: int) -> tuple[Tensor, int]:
    if not isinstance(spec, dict):
        raise RequestError("each input must be a JSON object with name, shape, datatype, data")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError('each input needs a "name" string')
    datatype = spec.get("datatype")
    if datatype not in DATATYPES:
        raise RequestError(
            f"input {name!r} has datatype {datatype!r}: use one of {', '.join(DATATYPES)}"
        )
    shape = _decode_shape(spec.get("shape"), name)
    parameters = spec.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError(f'input {name!r}: "parameters" must be a JSON object')
    if "shared_memory_region" in parameters:
        raise RequestError(f"input {name!r}: shared memory is not supported: send the data")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in spec:
            raise RequestError(f"input {name!r} has both data and binary_data_size: send one")
        array = _from_binary(name, datatype, shape, size, binary, offset)
        return Tensor(name, datatype, array), offset + array.nbytes
    if "data" not in spec:
        raise RequestError(f'input {name!r} needs "data" or a binary_data_size parameter')
    return Tensor(name, datatype, _from_json(name, datatype, shape, spec["data"])), offset


def _decode_shape(shape: Any, name: str) -> tuple[int, ...]:
    valid = isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    )
    if not valid:
        raise RequestError(f'input {name!r} needs "shape": a list of non-negative integers')
    return tuple(shape)


def _from_binary(
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    size: Any,
    binary: bytes | memoryview,
    offset: int,
) -> np.ndarray:
    dtype = DATATYPES[datatype]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RequestError(f"input {name!r}: binary_data_size must be a non-negative integer")
    count = math.prod(shape)
    if size != count * dtype.itemsize:
        raise RequestError(
            f"input {name!r}: binary_data_size is {size} bytes but shape {list(shape)} of "
            f"{datatype} needs {count * dtype.itemsize}"
        )
    if offset + size > len(binary):
        raise RequestError(
            f"input {name!r}: binary_data_size is {size} bytes but only "
            f"{len(binary) - offset} bytes of binary data are left in the body: "
            "check Inference-Header-Content-Length"
        )
    if count == 0:
        return np.empty(shape, dtype)
    return np.frombuffer(binary, dtype, count, offset).reshape(shape)


def _from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    dtype = DATATYPES[datatype]
    count = math.prod(shape)
    try:
        values = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise RequestError(f"input {name!r}: data is not a regular array ({exc})") from exc
    if values.size != count:
        raise RequestError(
            f"input {name!r}: data has {values.size} elements but shape {list(shape)} "
            f"needs {count}"
        )
    if count == 0:
        return np.empty(shape, dtype)
    if values.dtype.kind not in _JSON_KINDS[dtype.kind]:
        raise RequestError(
            f"input {name!r}: {datatype} data must be JSON "
            f"{'booleans' if dtype.kind == 'b' else 'numbers'}, not {values.dtype.kind!r}-kind "
            "values (strings, mixed or too-large numbers?)"
        )
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise RequestError(
                f"input {name!r}: {datatype} data must lie in [{info.min}, {info.max}]"
            )
    with np.errstate(over="ignore"):  # overflow to inf is refused just below
        array = values.astype(dtype).reshape(shape)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestError(f"input {name!r}: {datatype} data must be finite numbers")
    return array


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array."""
    for datatype, dtype in DATATYPES.items():
        if array.dtype.newbyteorder("<") == dtype:
            return datatype
    raise TypeError(f"no protocol datatype for numpy dtype {array.dtype}")


def encode_output(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes]:
    """The JSON entry of one output and its binary section (empty when sent as JSON)."""
    datatype = datatype_of(array)
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if not binary:
        entry["data"] = array.ravel().tolist()
        return entry, b""
    raw = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
    entry["parameters"] = {"binary_data_size": len(raw)}
    return entry, raw


def encode_body(header: dict[str, Any], sections: list[bytes]) -> tuple[bytes, int | None]:
    """The response body and, when binary sections follow the JSON, the JSON's length."""
    text = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    if not any(sections):
        return text, None
    return text + b"".join(sections), len(text)
