"""v2 tensors: JSON and binary decoding, strict checks, and encoding of outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from budget_edge.serve.errors import RequestError
from budget_edge.serve.tensors import (
    DATATYPES,
    datatype_of,
    decode_inputs,
    encode_body,
    encode_output,
    parse_json,
)


def _json_input(name: str, datatype: str, shape: list[int], data: object) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def test_json_flat_and_nested_data_give_the_same_array() -> None:
    flat = decode_inputs([_json_input("X", "FP32", [2, 3], [1, 2, 3, 4, 5, 6.5])], b"")
    nested = decode_inputs([_json_input("X", "FP32", [2, 3], [[1, 2, 3], [4, 5, 6.5]])], b"")
    assert flat["X"].array.dtype == np.float32
    assert flat["X"].array.shape == (2, 3)
    np.testing.assert_array_equal(flat["X"].array, nested["X"].array)
    assert flat["X"].array[1, 2] == np.float32(6.5)


def test_binary_sections_are_taken_in_input_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[1, 0, 1]], dtype=np.uint8)
    specs = [
        {
            "name": "A",
            "datatype": "FP32",
            "shape": [2, 3],
            "parameters": {"binary_data_size": a.nbytes},
        },
        _json_input("J", "INT64", [2], [7, -8]),
        {
            "name": "B",
            "datatype": "UINT8",
            "shape": [1, 3],
            "parameters": {"binary_data_size": b.nbytes},
        },
    ]
    tensors = decode_inputs(specs, a.tobytes() + b.tobytes())
    np.testing.assert_array_equal(tensors["A"].array, a)
    np.testing.assert_array_equal(tensors["B"].array, b)
    np.testing.assert_array_equal(tensors["J"].array, np.array([7, -8], dtype=np.int64))


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_round_trips_through_binary_and_json(datatype: str) -> None:
    dtype = DATATYPES[datatype]
    array = (np.arange(6) % 2).astype(dtype).reshape(3, 2)
    entry, raw = encode_output("T", array, binary=True)
    assert entry["parameters"]["binary_data_size"] == array.nbytes
    spec = {
        "name": "T",
        "datatype": entry["datatype"],
        "shape": entry["shape"],
        "parameters": entry["parameters"],
    }
    np.testing.assert_array_equal(decode_inputs([spec], raw)["T"].array, array)
    entry, raw = encode_output("T", array, binary=False)
    assert raw == b""
    spec = json.loads(json.dumps(entry))
    np.testing.assert_array_equal(decode_inputs([spec], b"")["T"].array, array)


def test_float32_values_survive_json_exactly() -> None:
    array = np.array([0.1, -3.3e-7, 1e30], dtype=np.float32)
    entry, _ = encode_output("T", array, binary=False)
    back = decode_inputs([json.loads(json.dumps(entry))], b"")["T"].array
    assert back.tobytes() == array.tobytes()


@pytest.mark.parametrize(
    ("spec", "binary", "message"),
    [
        ("not an object", b"", "JSON object"),
        ({"datatype": "FP32", "shape": [1], "data": [1]}, b"", '"name"'),
        (_json_input("X", "FLOAT", [1], [1]), b"", "datatype 'FLOAT'"),
        (_json_input("X", "BYTES", [1], ["a"]), b"", "datatype 'BYTES'"),
        (_json_input("X", "FP32", [-1], [1]), b"", "non-negative integers"),
        (_json_input("X", "FP32", [1.5], [1]), b"", "non-negative integers"),
        (_json_input("X", "FP32", "2", [1, 2]), b"", "non-negative integers"),
        (_json_input("X", "FP32", [3], [1, 2]), b"", "has 2 elements but shape [3] needs 3"),
        (_json_input("X", "FP32", [3], [[1, 2], [3]]), b"", "not a regular array"),
        (_json_input("X", "FP32", [2, 2], [[1, 2], [3]]), b"", "has 3 elements"),
        (_json_input("X", "FP32", [2], ["1", "2"]), b"", "must be JSON numbers, not strings"),
        (_json_input("X", "FP32", [2], [1, None]), b"", "must be JSON numbers, not null"),
        (_json_input("X", "INT64", [2], [1, 2.5]), b"", "JSON integers, not fractions"),
        (_json_input("X", "UINT8", [2], [1, 256]), b"", "[0, 255]"),
        (_json_input("X", "UINT8", [1], [-1]), b"", "[0, 255]"),
        (_json_input("X", "BOOL", [2], [1, 0]), b"", "must be JSON booleans"),
        (_json_input("X", "FP16", [1], [1e6]), b"", "finite"),
        (_json_input("X", "INT64", [1], [2**80]), b"", "numbers too large"),
        (_json_input("X", "UINT8", [2], [True, 0]), b"", "JSON integers, not true/false"),
        (_json_input("X", "FP32", [2], [0.5, False]), b"", "JSON numbers, not true/false"),
        (_json_input("X", "BOOL", [2], [True, 1]), b"", "JSON booleans (true/false), not integ"),
        (_json_input("X", "INT32", [2], [1, {}]), b"", "JSON integers, not objects"),
        (_json_input("X", "FP32", [2, 1], [[1], 2]), b"", "not a regular array"),
        ({"name": "X", "datatype": "FP32", "shape": [1]}, b"", '"data" or a binary_data_size'),
        (
            {
                "name": "X",
                "datatype": "FP32",
                "shape": [1],
                "data": [1],
                "parameters": {"binary_data_size": 4},
            },
            b"abcd",
            "both data and binary_data_size",
        ),
        (
            {"name": "X", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}},
            b"abcd",
            "needs 8",
        ),
        (
            {"name": "X", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
            b"abcd",
            "only 4 bytes",
        ),
        (
            {
                "name": "X",
                "datatype": "FP32",
                "shape": [1],
                "parameters": {"binary_data_size": "4"},
            },
            b"abcd",
            "non-negative integer",
        ),
        (
            {"name": "X", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
            b"abcdefgh",
            "4 bytes of binary data",
        ),
        (
            {
                "name": "X",
                "datatype": "FP32",
                "shape": [1],
                "parameters": {"shared_memory_region": "r"},
            },
            b"",
            "shared memory",
        ),
        (
            {"name": "X", "datatype": "FP32", "shape": [1], "data": [1], "parameters": []},
            b"",
            '"parameters" must be a JSON object',
        ),
    ],
)
def test_malformed_inputs_are_refused_with_a_reason(
    spec: object, binary: bytes, message: str
) -> None:
    with pytest.raises(RequestError) as info:
        decode_inputs([spec], binary)
    assert message in str(info.value)


# Shapes numpy once saw before they were checked (a 500 each): dimensions past 2**64,
# empty shapes whose other dimensions overflow, and more axes than numpy allows.
BAD_SHAPES = [
    ([0, 2**64, 28, 1], "an integer of 65 bits"),
    ([0, 2**62, 2**62, 1], "at most 2147483647 values"),
    ([2**31, 1], "at most 2147483647 values"),
    ([65536, 65536], "at most 2147483647 values"),
    ([1] * 9, "9 dimensions: at most 8"),
    ([1] * 100_000, "100000 dimensions"),
    ([2, -1], "got -1"),
    ([2, None], "got None"),
]


@pytest.mark.parametrize(("shape", "message"), BAD_SHAPES)
def test_shapes_are_bounded_before_numpy_in_json_form(shape: list, message: str) -> None:
    with pytest.raises(RequestError) as info:
        decode_inputs([_json_input("X", "UINT8", shape, [])], b"")
    assert message in str(info.value)


@pytest.mark.parametrize(("shape", "message"), BAD_SHAPES)
def test_shapes_are_bounded_before_numpy_in_binary_form(shape: list, message: str) -> None:
    spec = {"name": "X", "datatype": "UINT8", "shape": shape, "parameters": {"binary_data_size": 0}}
    with pytest.raises(RequestError) as info:
        decode_inputs([spec], b"")
    assert message in str(info.value)


def test_the_largest_allowed_shapes_still_decode() -> None:
    """The bounds refuse only what cannot be: eight axes, and empty tensors of any
    extent up to the value bound."""
    eight = decode_inputs([_json_input("X", "UINT8", [1] * 8, [7])], b"")
    assert eight["X"].array.shape == (1,) * 8
    empty = decode_inputs([_json_input("X", "FP32", [0, 2**15, 2**15], [])], b"")
    assert empty["X"].array.shape == (0, 2**15, 2**15)


def test_data_whose_count_differs_from_the_shape_is_refused_before_numpy() -> None:
    """A million values against a shape of two: counted on the lists, never converted."""
    with pytest.raises(RequestError, match="data has 1000000 elements but shape"):
        decode_inputs([_json_input("X", "UINT8", [2], [[0] * 1000] * 1000)], b"")


def test_inputs_must_be_a_non_empty_list_of_unique_names() -> None:
    with pytest.raises(RequestError, match="non-empty list"):
        decode_inputs([], b"")
    with pytest.raises(RequestError, match="non-empty list"):
        decode_inputs({"name": "X"}, b"")
    twice = [_json_input("X", "FP32", [1], [1]), _json_input("X", "FP32", [1], [2])]
    with pytest.raises(RequestError, match="appears twice"):
        decode_inputs(twice, b"")


def test_empty_tensors_decode_to_empty_arrays() -> None:
    tensors = decode_inputs([_json_input("X", "INT32", [0, 3], [])], b"")
    assert tensors["X"].array.shape == (0, 3)
    assert tensors["X"].array.dtype == np.int32


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe{", "not valid JSON"),
        (b"[1, 2]", "must be an object"),
        (b'{"inputs": [NaN]}', "NaN is not allowed"),
        (b'{"a": -Infinity}', "-Infinity is not allowed"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_parse_json_refuses_what_is_not_a_finite_json_object(raw: bytes, message: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_json(raw)
    assert message in str(info.value)


def test_json_number_overflowing_to_infinity_is_refused() -> None:
    header = parse_json(
        b'{"inputs": [{"name": "X", "datatype": "FP64", "shape": [1], "data": [1e999]}]}'
    )
    with pytest.raises(RequestError, match="finite"):
        decode_inputs(header["inputs"], b"")


def test_datatype_of_maps_numpy_dtypes_and_refuses_others() -> None:
    assert datatype_of(np.zeros(1, np.float32)) == "FP32"
    assert datatype_of(np.zeros(1, ">f4")) == "FP32"
    assert datatype_of(np.zeros(1, bool)) == "BOOL"
    assert datatype_of(np.zeros(1, np.int64)) == "INT64"
    with pytest.raises(TypeError):
        datatype_of(np.zeros(1, np.complex64))


def test_big_endian_arrays_are_sent_little_endian() -> None:
    _, raw = encode_output("T", np.array([1.0, 2.0], dtype=">f4"), binary=True)
    assert raw == np.array([1.0, 2.0], dtype="<f4").tobytes()


def test_encode_body_appends_binary_sections_after_the_json() -> None:
    body, length = encode_body({"outputs": []}, [b""])
    assert length is None
    assert json.loads(body) == {"outputs": []}
    body, length = encode_body({"outputs": []}, [b"ab", b"", b"cd"])
    assert length is not None
    assert json.loads(body[:length]) == {"outputs": []}
    assert body[length:] == b"abcd"
