"""v2 inference requests: the JSON/binary split, parameters and requested outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from budget_edge.serve.errors import RequestError
from budget_edge.serve.request import RequestedOutput, parse_request, split_body


def _body(header: dict, *sections: bytes) -> tuple[bytes, str | None]:
    text = json.dumps(header).encode()
    if not sections:
        return text, None
    return text + b"".join(sections), str(len(text))


def test_json_request_is_parsed_with_its_id_parameters_and_outputs() -> None:
    body, length = _body({
        "id": "r1",
        "parameters": {"budget": 0.5, "binary_data_output": True, "priority": 3,
                       "triton_enable_empty_final_response": False},
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [2.0]}],
        "outputs": [{"name": "A"}, {"name": "B", "parameters": {"binary_data": False}}],
    })
    request = parse_request(body, length)
    assert request.id == "r1"
    # Protocol bookkeeping (binary_data_output, Triton's reserved names) is not the model's.
    assert request.parameters == {"budget": 0.5}
    assert request.binary_output is True
    assert request.outputs == [RequestedOutput("A", True), RequestedOutput("B", False)]
    assert request.inputs["X"].array.tolist() == [2.0]


def test_without_outputs_every_output_is_wanted_in_the_default_form() -> None:
    body, length = _body({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1],
                                      "data": [2.0]}]})
    request = parse_request(body, length)
    assert request.outputs is None
    assert request.binary_output is False
    assert request.id is None


def test_binary_request_is_split_at_the_header_length() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    budget = np.array([0.25], dtype=np.float32)
    body, length = _body({"inputs": [
        {"name": "IMAGE", "datatype": "UINT8", "shape": [1, 2, 2, 3],
         "parameters": {"binary_data_size": image.nbytes}},
        {"name": "BUDGET", "datatype": "FP32", "shape": [1],
         "parameters": {"binary_data_size": budget.nbytes}},
    ]}, image.tobytes(), budget.tobytes())
    request = parse_request(body, length)
    np.testing.assert_array_equal(request.inputs["IMAGE"].array, image)
    np.testing.assert_array_equal(request.inputs["BUDGET"].array, budget)


@pytest.mark.parametrize("length", ["0", "-3", "abc", "1.5", "999"])
def test_bad_header_length_is_refused(length: str) -> None:
    with pytest.raises(RequestError, match="Inference-Header-Content-Length"):
        split_body(b'{"inputs": []}', length)


def test_binary_data_without_header_length_is_refused() -> None:
    body, _ = _body({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1],
                                 "parameters": {"binary_data_size": 4}}]})
    with pytest.raises(RequestError, match="only 0 bytes"):
        parse_request(body, None)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"id": 5, "inputs": []}, '"id" must be a string'),
        ({"parameters": [], "inputs": []}, '"parameters" must be a JSON object'),
        ({"parameters": {"binary_data_output": "yes"}, "inputs": []}, "binary_data_output"),
        ({"inputs": []}, "non-empty list"),
        ({"outputs": {"name": "A"}}, '"outputs" must be a list'),
        ({"outputs": [{"nam": "A"}]}, 'needs a "name" string'),
        ({"outputs": [{"name": "A", "parameters": 1}]}, '"parameters" must be a JSON object'),
        ({"outputs": [{"name": "A", "parameters": {"binary_data": 1}}]}, "binary_data"),
        ({"outputs": [{"name": "A", "parameters": {"classification": 3}}]}, "classification"),
        ({"outputs": [{"name": "A"}, {"name": "A"}]}, "requested twice"),
    ],
)
def test_malformed_requests_are_refused(header: dict, message: str) -> None:
    header = {**header}
    header.setdefault("inputs", [{"name": "X", "datatype": "FP32", "shape": [1], "data": [1]}])
    body, length = _body(header)
    with pytest.raises(RequestError) as info:
        parse_request(body, length)
    assert message in str(info.value)
