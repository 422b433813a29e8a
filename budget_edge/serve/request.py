"""An inference request of the Open Inference Protocol (v2): split, parsed and checked.

The body is a JSON object, optionally followed by binary tensor data; then the
`Inference-Header-Content-Length` header gives the JSON's length in bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from budget_edge.serve.errors import RequestError
from budget_edge.serve.tensors import Tensor, decode_inputs, parse_json

HEADER_LENGTH = "Inference-Header-Content-Length"

# Request parameters Triton reserves for its own scheduling; tritonclient may send
# them, and a server without sequences or priorities accepts and ignores them.
_IGNORED_PARAMETERS = {
    "sequence_id",
    "sequence_start",
    "sequence_end",
    "priority",
    "headers",
}


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as binary data."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A parsed request: its inputs, its model parameters and the outputs it wants."""

    id: str | None
    inputs: dict[str, Tensor]
    parameters: dict[str, Any]  # for the model: protocol bookkeeping removed
    outputs: list[RequestedOutput] | None  # None: every output of the model
    binary_output: bool  # binary_data_output: the form of outputs not listed
    timeout_s: float | None = None  # the client's deadline (Triton's `timeout`, in us)


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse a request body; `header_length` is the Inference-Header-Content-Length value."""
    json_part, binary = split_body(body, header_length)
    header = parse_json(json_part)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError('"id" must be a string')
    parameters = header.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError('"parameters" must be a JSON object')
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise RequestError('parameter "binary_data_output" must be true or false')
    return InferRequest(
        id=request_id,
        inputs=decode_inputs(header.get("inputs"), binary),
        parameters=_model_parameters(parameters),
        outputs=_requested_outputs(header.get("outputs"), binary_output),
        binary_output=binary_output,
        timeout_s=_timeout(parameters.get("timeout")),
    )


def _timeout(value: Any) -> float | None:
    """Triton's `timeout` request parameter: microseconds, 0 or absent for the server's."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        shown = (
            f"an integer of {value.bit_length()} bits"
            if isinstance(value, int) and value.bit_length() > 64
            else repr(value)
        )
        raise RequestError(
            f"parameter timeout must be microseconds, an integer in [0, 2**63), got {shown}"
        )
    return value / 1e6 if value else None


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes | memoryview]:
    """The JSON part and the binary part (a view, not a copy) of a body."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    # ASCII digits only (str.isdigit takes "²", which int() refuses), and a sane length
    if not re.fullmatch(r"[0-9]{1,15}", text) or not 0 < int(text) <= len(body):
        raise RequestError(
            f"{HEADER_LENGTH} is {header_length!r} but must be the JSON header's length in "
            f"bytes, between 1 and the body's {len(body)}"
        )
    size = int(text)
    view = memoryview(body)
    return bytes(view[:size]), view[size:]


def _model_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in parameters.items()
        if key != "binary_data_output"
        and key not in _IGNORED_PARAMETERS
        and key != "timeout"  # the server's, read above
        and not key.startswith("triton_")
    }


def _requested_outputs(specs: Any, binary_default: bool) -> list[RequestedOutput] | None:
    if specs is None:
        return None
    if not isinstance(specs, list):
        raise RequestError('"outputs" must be a list of {"name": ...} objects')
    outputs: list[RequestedOutput] = []
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise RequestError('each entry of "outputs" needs a "name" string')
        parameters = spec.get("parameters", {})
        if not isinstance(parameters, dict):
            raise RequestError(f'output {spec["name"]!r}: "parameters" must be a JSON object')
        binary = parameters.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise RequestError(f'output {spec["name"]!r}: "binary_data" must be true or false')
        if parameters.get("classification") or "shared_memory_region" in parameters:
            raise RequestError(
                f"output {spec['name']!r}: classification and shared memory outputs are not "
                "supported: ask for the tensor and read it"
            )
        if any(out.name == spec["name"] for out in outputs):
            raise RequestError(f"output {spec['name']!r} is requested twice")
        outputs.append(RequestedOutput(spec["name"], binary))
    return outputs
