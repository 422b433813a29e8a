"""What an ONNX file declares, read from its protobuf wire format: its inputs and outputs,
the tensors it keeps outside itself, and its graph's initializers' raw bytes.

An ONNX graph can keep its weights in side files ("external data"). The runtime
hashes the graph's bytes against the manifest, but ONNX Runtime resolves side
files relative to the working directory when a session is made from bytes, so
they would run unhashed: zeroing one once changed the logits silently. budget-edge
never exports external data, so a graph that has any is refused.

The runtime must not need the `onnx` package (a device installs only onnxruntime),
so this walks the protobuf fields itself. Only the messages that can hold a
tensor are descended into; raw weight bytes are skipped by their length.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from budget_edge.errors import ManifestError
from budget_edge.runtime.manifest import GraphSpec, TensorSpec

# Protobuf wire types.
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5

# message -> {field number: message type of that field}, from onnx.proto3. Only the
# paths that lead to a TensorProto are listed.
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_TENSOR_DIMS = 1
_TENSOR_DATA_TYPE = 2
_TENSOR_NAME = 8
_TENSOR_RAW_DATA = 9
_TENSOR_EXTERNAL_DATA = 13  # repeated key/value entries: location, offset, length
_TENSOR_DATA_LOCATION = 14  # enum: 0 DEFAULT, 1 EXTERNAL
_EXTERNAL = 1
_MAX_DEPTH = 64  # If/Loop bodies nest graphs; a hostile file could nest without end


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field; bytes fields as views."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            value, pos = _varint(data, pos)
            yield number, kind, value
        elif kind == _BYTES:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise WireError(f"field {number} runs past the end of its message")
            yield number, kind, data[pos : pos + size]
            pos += size
        elif kind in (_FIXED64, _FIXED32):
            pos += 8 if kind == _FIXED64 else 4
            if pos > len(data):
                raise WireError(f"field {number} runs past the end of its message")
        else:  # groups (3, 4) are not used by ONNX
            raise WireError(f"field {number} has unsupported wire type {kind}")


def external_tensors(model: bytes) -> list[str]:
    """Names of the tensors the model keeps outside its own bytes (empty: none)."""
    found: list[str] = []
    _walk(memoryview(model), "model", found, 0)
    return found


def _walk(data: memoryview, message: str, found: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise WireError(f"graphs nested more than {_MAX_DEPTH} deep")
    if message == "tensor":
        _note_if_external(data, found)
        return
    children = _CHILDREN[message]
    for number, kind, value in _fields(data):
        child = children.get(number)
        if child is not None and kind == _BYTES:
            assert isinstance(value, memoryview)
            _walk(value, child, found, depth + 1)


def _note_if_external(data: memoryview, found: list[str]) -> None:
    name = ""
    external = False
    for number, kind, value in _fields(data):
        if number == _TENSOR_NAME and kind == _BYTES:
            assert isinstance(value, memoryview)
            name = bytes(value).decode("utf-8", "replace")
        elif number == _TENSOR_DATA_LOCATION and kind == _VARINT:
            external = external or value == _EXTERNAL
        elif number == _TENSOR_EXTERNAL_DATA:
            external = True
    if external:
        found.append(name or "<unnamed>")


@dataclass(frozen=True)
class DeclaredTensor:
    """A graph input or output as the file declares it; a dimension is an int, a name or
    None (unknown)."""

    name: str
    dtype: str  # numpy's name where budget-edge uses the type, else "onnx type N"
    shape: tuple[int | str | None, ...]


# TensorProto.DataType -> numpy name, for the types a manifest can list.
DTYPES = {1: "float32", 2: "uint8", 3: "int8", 7: "int64", 9: "bool", 10: "float16"}


def graph_signature(model: bytes) -> tuple[list[DeclaredTensor], list[DeclaredTensor]]:
    """The main graph's inputs (initializers excluded) and outputs."""
    inputs: list[DeclaredTensor] = []
    outputs: list[DeclaredTensor] = []
    initializers: set[str] = set()
    for number, kind, graph in _fields(memoryview(model)):
        if number != 7 or kind != _BYTES:  # ModelProto.graph
            continue
        assert isinstance(graph, memoryview)
        for field, fkind, value in _fields(graph):
            if fkind != _BYTES:
                continue
            assert isinstance(value, memoryview)
            if field == 11:  # GraphProto.input
                inputs.append(_value_info(value))
            elif field == 12:  # GraphProto.output
                outputs.append(_value_info(value))
            elif field == 5:  # GraphProto.initializer: a default, not an input to feed
                initializers.add(_string_field(value, _TENSOR_NAME))
    return [t for t in inputs if t.name not in initializers], outputs


def _string_field(data: memoryview, wanted: int) -> str:
    for number, kind, value in _fields(data):
        if number == wanted and kind == _BYTES:
            assert isinstance(value, memoryview)
            return bytes(value).decode("utf-8", "replace")
    return ""


def _value_info(data: memoryview) -> DeclaredTensor:
    """ValueInfoProto: name (1), type (2) -> tensor_type (1) -> elem_type (1), shape (2)."""
    name, elem = "", 0
    dims: list[int | str | None] = []
    for number, kind, value in _fields(data):
        if number == 1 and kind == _BYTES:
            assert isinstance(value, memoryview)
            name = bytes(value).decode("utf-8", "replace")
        elif number == 2 and kind == _BYTES:
            assert isinstance(value, memoryview)
            for tnum, tkind, tensor_type in _fields(value):
                if tnum == 1 and tkind == _BYTES:
                    assert isinstance(tensor_type, memoryview)
                    elem, dims = _tensor_type(tensor_type)
    return DeclaredTensor(name, DTYPES.get(elem, f"onnx type {elem}"), tuple(dims))


def _tensor_type(data: memoryview) -> tuple[int, list[int | str | None]]:
    elem = 0
    dims: list[int | str | None] = []
    for number, kind, value in _fields(data):
        if number == 1 and kind == _VARINT:
            assert isinstance(value, int)
            elem = value
        elif number == 2 and kind == _BYTES:  # TensorShapeProto.dim (1) -> Dimension
            assert isinstance(value, memoryview)
            for dnum, dkind, dim in _fields(value):
                if dnum == 1 and dkind == _BYTES:
                    assert isinstance(dim, memoryview)
                    dims.append(_dimension(dim))
    return elem, dims


def _dimension(data: memoryview) -> int | str | None:
    for number, kind, value in _fields(data):
        if number == 1 and kind == _VARINT:  # dim_value
            assert isinstance(value, int)
            return value
        if number == 2 and kind == _BYTES:  # dim_param
            assert isinstance(value, memoryview)
            return bytes(value).decode("utf-8", "replace")
    return None


def check_graph(model: bytes, spec: GraphSpec, what: str) -> None:
    """Raise ManifestError unless the graph keeps all its tensors inside and declares the
    inputs (in order) and outputs its manifest entry lists, with their types and sizes."""
    try:
        external = external_tensors(model)
        inputs, outputs = graph_signature(model)
    except WireError as exc:
        raise ManifestError(
            f"{what} is not a readable ONNX file ({exc}): re-export the model"
        ) from exc
    if external:
        shown = ", ".join(external[:3])
        if len(external) > 3:
            shown += f" and {len(external) - 3} more"
        raise ManifestError(
            f"{what} keeps tensors in external data files ({shown}), which "
            "the manifest does not hash: an artifact's graphs hold their "
            "own weights; re-export it with budget-edge"
        )
    names = [t.name for t in inputs]
    if names != [t.name for t in spec.inputs]:
        raise ManifestError(
            f"{what} has inputs {names} but the manifest says "
            f"{[t.name for t in spec.inputs]}: re-export the model"
        )
    by_name = {t.name: t for t in outputs}
    missing = [t.name for t in spec.outputs if t.name not in by_name]
    if missing:
        raise ManifestError(
            f"{what} has outputs {list(by_name)} but the manifest names "
            f"{missing}: re-export the model"
        )
    pairs = [*zip(spec.inputs, inputs, strict=True)]
    pairs += [(t, by_name[t.name]) for t in spec.outputs]
    for listed, declared in pairs:
        _check_declared(listed, declared, what)


def _check_declared(listed: TensorSpec, declared: DeclaredTensor, what: str) -> None:
    differ = len(declared.shape) != len(listed.shape) or any(
        isinstance(a, int) and isinstance(b, int) and a != b
        for a, b in zip(listed.shape, declared.shape, strict=False)
    )
    if differ or declared.dtype != listed.dtype:
        raise ManifestError(
            f"{what}: tensor {listed.name!r} is {declared.dtype} {list(declared.shape)} but "
            f"the manifest says {listed.dtype} {listed.shape}: the graph does not belong to "
            "this manifest; re-export the model"
        )


def check_graphs(specs: Sequence[GraphSpec], read: Any) -> None:
    """check_graph on every graph; `read(file)` gives a file's checked bytes."""
    for spec in specs:
        check_graph(read(spec.file), spec, f"graph {spec.name!r} ({spec.file})")


@dataclass(frozen=True)
class RawInitializer:
    """A top-level initializer of a model's graph whose values are raw little-endian bytes
    (`raw_data`): what ONNX Runtime writes for every numeric tensor."""

    name: str
    data_type: int  # TensorProto.DataType
    dims: tuple[int, ...]
    raw: memoryview


def _messages(data: memoryview, wanted: int) -> Iterator[memoryview]:
    """The embedded messages of field `wanted` in one message."""
    for number, kind, value in _fields(data):
        if number == wanted and kind == _BYTES:
            assert isinstance(value, memoryview)
            yield value


def _main_graph(model: bytes, wanted: int) -> Iterator[memoryview]:
    """Field `wanted` of the model's main graph (ModelProto.graph = 7)."""
    for graph in _messages(memoryview(model), 7):
        yield from _messages(graph, wanted)


def has_subgraphs(model: bytes) -> bool:
    """Whether any node of the model's main graph has a graph attribute (If, Loop, Scan)."""
    for node in _main_graph(model, 1):  # GraphProto.node
        for attribute in _messages(node, 5):  # NodeProto.attribute
            if any(number in (6, 11) for number, _, _ in _fields(attribute)):
                return True  # AttributeProto.g / .graphs
    return False


def raw_initializers(model: bytes) -> list[RawInitializer]:
    """The initializers of the model's main graph kept as raw bytes; others (typed value
    fields, external data, those inside If/Loop bodies) are left out."""
    found = (_raw_initializer(t) for t in _main_graph(model, 5))  # GraphProto.initializer
    return [item for item in found if item is not None]


def _raw_initializer(data: memoryview) -> RawInitializer | None:
    name, data_type, raw = "", 0, None
    dims: list[int] = []
    for number, kind, value in _fields(data):
        if number == _TENSOR_DIMS:
            if kind == _VARINT:
                assert isinstance(value, int)
                dims.append(value)
            elif kind == _BYTES:  # packed
                assert isinstance(value, memoryview)
                pos = 0
                while pos < len(value):
                    dim, pos = _varint(value, pos)
                    dims.append(dim)
        elif number == _TENSOR_DATA_TYPE and kind == _VARINT:
            assert isinstance(value, int)
            data_type = value
        elif number == _TENSOR_NAME and kind == _BYTES:
            assert isinstance(value, memoryview)
            name = bytes(value).decode("utf-8", "replace")
        elif number == _TENSOR_RAW_DATA and kind == _BYTES:
            assert isinstance(value, memoryview)
            raw = value
        elif number == _TENSOR_EXTERNAL_DATA or (
            number == _TENSOR_DATA_LOCATION and value == _EXTERNAL
        ):
            return None  # external data is refused elsewhere; never shared
    if raw is None or not name:
        return None
    return RawInitializer(name=name, data_type=data_type, dims=tuple(dims), raw=raw)
