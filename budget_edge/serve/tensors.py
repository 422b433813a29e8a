"""Tensors of the Open Inference Protocol (v2) as numpy arrays, in JSON or in binary.

A tensor travels either as JSON (`"data"`: numbers in row-major order, flat or
nested) or, with Triton's binary tensor data extension, as raw little-endian
row-major bytes after the JSON header, announced by
`"parameters": {"binary_data_size": <bytes>}`. The binary sections follow the
header in the order of the tensors that have one.
"""

from __future__ import annotations

import itertools
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

# Which Python types of JSON value each kind of datatype accepts: booleans only for
# BOOL, integers for integer types, any number for floats. Checked before numpy, which
# would read [true, 0] as the integers [1, 0].
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "b": (bool,),
    "u": (int,),
    "i": (int,),
    "f": (int, float),
}
# Bounds on a declared shape, checked on its Python integers before numpy sees it:
# numpy refuses more than 64 axes and dimensions past 2**63 with exceptions of its own,
# and even an empty shape such as [0, 2**62, 2**62] is "too big" for it. The model's
# inputs have one to four axes.
MAX_RANK = 8
MAX_VALUES = 2**31 - 1  # values in one tensor, an empty axis counted as one


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
            f'request JSON must be an object, got {type(value).__name__}: send {{"inputs": [...]}}'
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
    """The declared shape, bounded (MAX_RANK, MAX_VALUES) while still Python integers."""
    if not isinstance(shape, list):
        raise RequestError(f'input {name!r} needs "shape": a list of non-negative integers')
    if len(shape) > MAX_RANK:
        raise RequestError(
            f"input {name!r} has a shape of {len(shape)} dimensions: at most "
            f"{MAX_RANK} are allowed (the model's inputs have 1 to 4)"
        )
    extent = 1
    for d in shape:
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise RequestError(
                f'input {name!r} needs "shape": a list of non-negative integers, got {_shown(d)}'
            )
        extent *= max(d, 1)
        if extent > MAX_VALUES:
            shown = ", ".join(_shown(v) for v in shape)
            raise RequestError(
                f"input {name!r}: shape [{shown}] is too large: a tensor "
                f"holds at most {MAX_VALUES} values"
            )
    return tuple(shape)


def _shown(value: Any) -> str:
    """A value for an error message, short even when it is a 4,000-digit integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return json.dumps(value)[:40] if isinstance(value, (str, list, dict)) else repr(value)


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
    size, types = _json_values(name, data)
    if size != count:
        raise RequestError(
            f"input {name!r}: data has {size} elements but shape {list(shape)} needs {count}"
        )
    if count == 0:
        return np.empty(shape, dtype)
    wrong = sorted(t.__name__ for t in types if t not in _JSON_TYPES[dtype.kind])
    if wrong:
        want = (
            "booleans (true/false)"
            if dtype.kind == "b"
            else "integers"
            if dtype.kind in "iu"
            else "numbers"
        )
        got = ", ".join(_JSON_NAMES.get(t, t) for t in wrong)
        raise RequestError(f"input {name!r}: {datatype} data must be JSON {want}, not {got}")
    try:
        values = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise RequestError(f"input {name!r}: data is not a regular array ({exc})") from exc
    if values.dtype.kind not in "biuf":  # integers too large for any numpy type
        raise RequestError(f"input {name!r}: {datatype} data holds numbers too large for it")
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


# Python type names as JSON calls them, for error messages.
_JSON_NAMES = {
    "bool": "true/false",
    "str": "strings",
    "NoneType": "null",
    "dict": "objects",
    "float": "fractions",
    "int": "integers",
}


def _json_values(name: str, data: Any) -> tuple[int, set[type]]:
    """How many values JSON tensor data holds, and their Python types: counted on the
    parsed lists, one nesting level at a time, so a wrong count or type is refused
    before numpy reads the data."""
    items = data if isinstance(data, list) else [data]
    while True:
        types = set(map(type, items))
        if list not in types:
            return len(items), types
        if len(types) > 1:
            raise RequestError(
                f"input {name!r}: data is not a regular array (lists and "
                "values side by side): send it flat or evenly nested"
            )
        items = list(itertools.chain.from_iterable(items))


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
