"""v2 inference requests: the JSON/binary split, parameters and requested outputs."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget_edge.errors import InputError
from budget_edge.serve.errors import RequestError
from budget_edge.serve.request import RequestedOutput, parse_request, split_body


def _body(header: dict, *sections: bytes) -> tuple[bytes, str | None]:
    text = json.dumps(header).encode()
    if not sections:
        return text, None
    return text + b"".join(sections), str(len(text))


def test_json_request_is_parsed_with_its_id_parameters_and_outputs() -> None:
    body, length = _body(
        {
            "id": "r1",
            "parameters": {
                "budget": 0.5,
                "binary_data_output": True,
                "priority": 3,
                "triton_enable_empty_final_response": False,
            },
            "inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [2.0]}],
            "outputs": [{"name": "A"}, {"name": "B", "parameters": {"binary_data": False}}],
        }
    )
    request = parse_request(body, length)
    assert request.id == "r1"
    # Protocol bookkeeping (binary_data_output, Triton's reserved names) is not the model's.
    assert request.parameters == {"budget": 0.5}
    assert request.binary_output is True
    assert request.outputs == [RequestedOutput("A", True), RequestedOutput("B", False)]
    assert request.inputs["X"].array.tolist() == [2.0]


@pytest.mark.parametrize("timeout, seconds", [(None, None), (0, None), (250_000, 0.25)])
def test_the_triton_timeout_parameter_is_the_requests_deadline(
    timeout: int | None, seconds: float | None
) -> None:
    parameters = {} if timeout is None else {"timeout": timeout}
    body, length = _body(
        {
            "parameters": parameters,
            "inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [2.0]}],
        }
    )
    request = parse_request(body, length)
    assert request.timeout_s == seconds
    assert "timeout" not in request.parameters  # the server's, not the model's


def test_without_outputs_every_output_is_wanted_in_the_default_form() -> None:
    body, length = _body(
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [2.0]}]}
    )
    request = parse_request(body, length)
    assert request.outputs is None
    assert request.binary_output is False
    assert request.id is None


def test_binary_request_is_split_at_the_header_length() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    budget = np.array([0.25], dtype=np.float32)
    body, length = _body(
        {
            "inputs": [
                {
                    "name": "IMAGE",
                    "datatype": "UINT8",
                    "shape": [1, 2, 2, 3],
                    "parameters": {"binary_data_size": image.nbytes},
                },
                {
                    "name": "BUDGET",
                    "datatype": "FP32",
                    "shape": [1],
                    "parameters": {"binary_data_size": budget.nbytes},
                },
            ]
        },
        image.tobytes(),
        budget.tobytes(),
    )
    request = parse_request(body, length)
    np.testing.assert_array_equal(request.inputs["IMAGE"].array, image)
    np.testing.assert_array_equal(request.inputs["BUDGET"].array, budget)


@pytest.mark.parametrize("length", ["0", "-3", "abc", "1.5", "999"])
def test_bad_header_length_is_refused(length: str) -> None:
    with pytest.raises(RequestError, match="Inference-Header-Content-Length"):
        split_body(b'{"inputs": []}', length)


def test_binary_data_without_header_length_is_refused() -> None:
    body, _ = _body(
        {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": [1],
                    "parameters": {"binary_data_size": 4},
                }
            ]
        }
    )
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
        ({"parameters": {"timeout": "soon"}}, "timeout must be microseconds"),
        ({"parameters": {"timeout": -1}}, "timeout must be microseconds"),
        ({"parameters": {"timeout": 1.5}}, "timeout must be microseconds"),
        ({"parameters": {"timeout": 10**30}}, "an integer of 100 bits"),
    ],
)
def test_malformed_requests_are_refused(header: dict, message: str) -> None:
    header = {**header}
    header.setdefault("inputs", [{"name": "X", "datatype": "FP32", "shape": [1], "data": [1]}])
    body, length = _body(header)
    with pytest.raises(RequestError) as info:
        parse_request(body, length)
    assert message in str(info.value)


# ---- fuzzing: whatever a client sends, the answer is a 4xx, never a crash -------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["IMAGE", "INPUT", "BUDGET", "MASK", "OTHER"]),
        "datatype": st.sampled_from(["UINT8", "FP32", "BOOL", "INT64", "BYTES", "FP16", "X"]),
        "shape": st.lists(st.integers(-2, 9), max_size=5),
        "data": _JSON | st.lists(st.integers(0, 255), max_size=200),
    },
    optional={
        "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), _JSON, max_size=2)
    },
)
_REQUEST = st.fixed_dictionaries(
    {"inputs": st.lists(_TENSOR, max_size=3)},
    optional={
        "parameters": st.dictionaries(
            st.sampled_from(
                ["budget", "mode", "seed", "cap", "policy", "binary_data_output", "triton_x", "x"]
            ),
            _JSON,
            max_size=3,
        ),
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["LOGITS", "CLASS", "MASK", "PROBS", "FLOPS", "X"])},
                optional={"parameters": st.dictionaries(st.just("binary_data"), _JSON)},
            ),
            max_size=3,
        ),
        "id": _JSON,
    },
)


@pytest.fixture(scope="module")
def fuzz_model(tiny_artifact: Any) -> Any:
    from .conftest import load_model

    model = load_model(tiny_artifact)
    yield model
    model.runtime.close()


def _answer(model: Any, body: bytes, header: str | None) -> None:
    try:
        model.infer_body(body, header)
    except InputError:  # answered 4xx with a JSON error (serve/app.py)
        pass


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=400), header=st.none() | st.text(max_size=6))
def test_random_bytes_are_a_client_error(fuzz_model: Any, body: bytes, header: str | None) -> None:
    _answer(fuzz_model, body, header)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_REQUEST)
def test_any_request_structure_is_answered_or_a_client_error(
    fuzz_model: Any, request: dict[str, Any]
) -> None:
    _answer(fuzz_model, json.dumps(request).encode(), None)


@st.composite
def _nearly_valid(draw: Any) -> dict[str, Any]:
    """A good IMAGE request for the tiny model (8x8 RGB), then a few things a client may
    get wrong: parameters, extra inputs, outputs, one corrupted pixel."""
    n = draw(st.integers(1, 3))
    pixels: list[Any] = draw(st.lists(st.integers(0, 255), min_size=n * 192, max_size=n * 192))
    if draw(st.booleans()):
        pixels[draw(st.integers(0, len(pixels) - 1))] = draw(_JSON)
    request: dict[str, Any] = {
        "inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": [n, 8, 8, 3], "data": pixels}]
    }
    values = {
        "budget": st.floats(-0.5, 1.5) | _JSON,
        "mode": st.sampled_from(["greedy", "sample", "rank", "x"]) | _JSON,
        "seed": st.integers(-3, 2**64) | _JSON,
        "cap": st.sampled_from(["components", "flops", None, "x"]) | _JSON,
        "policy": st.sampled_from(["agent", "static", "x"]) | _JSON,
    }
    chosen = draw(st.lists(st.sampled_from(sorted(values)), max_size=4, unique=True))
    request["parameters"] = {k: draw(values[k]) for k in chosen}
    if draw(st.booleans()):
        request["inputs"].append(
            {
                "name": "MASK",
                "datatype": "BOOL",
                "shape": draw(st.sampled_from([[n, 3], [3], [n, 2]])),
                "data": draw(st.lists(st.booleans() | _JSON, max_size=9)),
            }
        )
    if draw(st.booleans()):
        request["inputs"].append(
            {
                "name": "BUDGET",
                "datatype": "FP32",
                "shape": draw(st.sampled_from([[n], [1], [n, 1]])),
                "data": draw(st.lists(st.floats(-1, 2) | _JSON, max_size=3)),
            }
        )
    if draw(st.booleans()):
        request["outputs"] = [
            {"name": name}
            for name in draw(
                st.lists(
                    st.sampled_from(["LOGITS", "CLASS", "MASK", "PROBS", "FLOPS", "X"]), max_size=3
                )
            )
        ]
    return request


@pytest.mark.slow  # the file goes out first: its fuzzing is about 15 s
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_nearly_valid())
def test_nearly_valid_requests_are_answered_or_a_client_error(
    fuzz_model: Any, request: dict[str, Any]
) -> None:
    _answer(fuzz_model, json.dumps(request).encode(), None)
