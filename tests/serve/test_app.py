"""HTTP routes on a live loopback server: health, metadata, inference, errors as JSON."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.budget import FixedBudget
from budget_edge.serve.admission import Admission
from budget_edge.serve.app import create_app
from budget_edge.serve.model import ServedModel
from budget_edge.serve.server import bind_unix, make_server, run

from .conftest import (
    HANG_S,
    GatedRuntime,
    Served,
    image_input,
    infer_json,
    load_model,
    random_images,
    read_head,
    request,
    serving,
    wait_until,
)


def assert_error(response: Any, status: int, *fragments: str) -> None:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message


def test_health_and_server_metadata(served: Served) -> None:
    assert request(served.url, "GET", "/v2/health/live").json() == {"live": True}
    assert request(served.url, "GET", "/v2/health/ready").json() == {"ready": True}
    meta = request(served.url, "GET", "/v2").json()
    assert meta["name"] == "budget-edge"
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("prefix", ["/v2/models/{name}", "/v2/models/{name}/versions/1"])
def test_model_metadata_and_readiness(served: Served, prefix: str) -> None:
    base = prefix.format(name=served.name)
    meta = request(served.url, "GET", base)
    assert meta.status == 200
    assert meta.json() == served.model.metadata()
    ready = request(served.url, "GET", base + "/ready")
    assert ready.status == 200
    assert ready.json() == {"name": served.name, "ready": True}


def test_infer_over_http_matches_the_runtime(served: Served, rng: np.random.Generator) -> None:
    images = random_images(rng, 3, served.input_size)
    response = infer_json(
        served.url, served.name, {"inputs": [image_input(images)], "parameters": {"budget": 0.4}}
    )
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in response.headers
    logits = next(o for o in response.json()["outputs"] if o["name"] == "LOGITS")
    want = served.runtime.infer(images, budget=0.4)
    np.testing.assert_allclose(
        np.reshape(logits["data"], logits["shape"]), want.logits, rtol=1e-6, atol=1e-6
    )


def test_binary_request_gets_a_binary_answer_with_its_header_length(
    served: Served, rng: np.random.Generator
) -> None:
    images = random_images(rng, 2, served.input_size)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "IMAGE",
                    "datatype": "UINT8",
                    "shape": list(images.shape),
                    "parameters": {"binary_data_size": images.nbytes},
                }
            ],
            "outputs": [{"name": "CLASS", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = request(
        served.url,
        "POST",
        f"/v2/models/{served.name}/infer",
        header + images.tobytes(),
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    outputs = json.loads(response.body[:length])["outputs"]
    assert outputs[0]["parameters"]["binary_data_size"] == 16
    classes = np.frombuffer(response.body[length:], "<i8")
    np.testing.assert_array_equal(classes, served.runtime.infer(images, budget=0.5).classes)


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("GET", "/v2/models/other", 404, "unknown model 'other'"),
        ("GET", "/v2/models/other/ready", 404, "unknown model 'other'"),
        ("POST", "/v2/models/other/infer", 404, "unknown model 'other'"),
        ("GET", "/v2/models/{name}/versions/2", 404, "unknown version '2'"),
        ("GET", "/v1/models", 404, "/v2/repository/index, /v2/models/stats"),
        ("GET", "/v1", 404, "[/ready|/config|/stats|/infer] and /metrics"),
        ("GET", "/v2/models/{name}/infer", 405, "Method Not Allowed"),
        ("DELETE", "/v2", 405, "Method Not Allowed"),
    ],
)
def test_unknown_models_and_routes_answer_json_errors(
    served: Served, method: str, path: str, status: int, fragment: str
) -> None:
    response = request(served.url, method, path.format(name=served.name), b"{}")
    assert_error(response, status, fragment)


# A binary tensor of one value under a shape of 100 axes (numpy allows 64).
HUNDRED_AXES = (
    b'{"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": ['
    + b"1, " * 99
    + b'1], "parameters": {"binary_data_size": 1}}]}'
)


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        (b"{not json", {}, "not valid JSON"),
        (
            b'{"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": [1], "data": [NaN]}]}',
            {},
            "NaN is not allowed",
        ),
        (b'{"inputs": []}', {}, "non-empty list"),
        (
            b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            {},
            "unknown input 'X'",
        ),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "99"}, "Inference-Header"),
        (b'{"inputs": []}', {"Content-Encoding": "gzip"}, "Content-Encoding 'gzip'"),
        # Shapes are bounded before numpy sees them (each was a 500), JSON and binary.
        (
            b'{"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": '
            b'[0, 18446744073709551616, 8, 3], "data": []}]}',
            {},
            "an integer of 65 bits",
        ),
        (
            b'{"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": '
            b'[0, 4611686018427387904, 4611686018427387904, 3], "data": []}]}',
            {},
            "too large",
        ),
        (
            HUNDRED_AXES + b"\0",
            {"Inference-Header-Content-Length": str(len(HUNDRED_AXES))},
            "100 dimensions",
        ),
        # JSON true is not the pixel 1.
        (
            b'{"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": [1, 8, 8, 3], '
            b'"data": [true' + b", 0" * 191 + b"]}]}",
            {},
            "not true/false",
        ),
    ],
)
def test_malformed_requests_get_400_and_the_server_keeps_serving(
    served: Served, body: bytes, headers: dict[str, str], fragment: str
) -> None:
    response = request(served.url, "POST", f"/v2/models/{served.name}/infer", body, headers)
    assert_error(response, 400, fragment)
    assert request(served.url, "GET", "/v2/health/live").status == 200


def test_bad_budget_gets_400(served: Served, rng: np.random.Generator) -> None:
    images = random_images(rng, 1, served.input_size)
    response = infer_json(
        served.url, served.name, {"inputs": [image_input(images)], "parameters": {"budget": 3}}
    )
    assert_error(response, 400, "budget 3 is outside [0, 1]")


def test_mode_allocate_without_an_allocator_is_400(
    served: Served, rng: np.random.Generator
) -> None:
    images = random_images(rng, 2, served.input_size)
    response = infer_json(
        served.url,
        served.name,
        {"inputs": [image_input(images)], "parameters": {"budget": 0.5, "mode": "allocate"}},
    )
    assert_error(response, 400, "no allocator", "budget-edge allocate")


@pytest.mark.parametrize(
    "parameters, fragment",
    [
        ({"budget": None}, "got null"),  # was the server's budget, silently
        ({"mode": None}, "parameter mode must be a non-empty string"),
        ({"mode": ""}, "parameter mode must be a non-empty string"),  # was greedy, silently
        ({"cap": ""}, "parameter cap must be a non-empty string"),
        ({"budget": 0.5, "mode": "sample", "seed": -1}, "seed"),
    ],
)
def test_null_or_empty_parameters_are_400_not_defaults(
    served: Served, rng: np.random.Generator, parameters: dict, fragment: str
) -> None:
    images = random_images(rng, 1, served.input_size)
    response = infer_json(
        served.url, served.name, {"inputs": [image_input(images)], "parameters": parameters}
    )
    assert_error(response, 400, fragment)


def test_a_budget_with_a_mask_is_400(served: Served, rng: np.random.Generator) -> None:
    images = random_images(rng, 1, served.input_size)
    k = served.runtime.num_components
    mask = {"name": "MASK", "datatype": "BOOL", "shape": [1, k], "data": [True] * k}
    response = infer_json(
        served.url,
        served.name,
        {"inputs": [image_input(images), mask], "parameters": {"budget": 0.5}},
    )
    assert_error(response, 400, "not both")


@pytest.mark.parametrize("length", ["-5", "abc", "1" * 30])
def test_a_malformed_content_length_gets_a_json_400(served: Served, length: str) -> None:
    """h11 refuses these before the app sees them; uvicorn answered in plain text."""
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v2/models/{served.name}/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        body = reply.read()
    assert reply.status == 400
    assert reply.getheader("content-type") == "application/json"
    assert "malformed HTTP" in json.loads(body)["error"]
    assert request(served.url, "GET", "/v2/health/live").status == 200


def test_inputs_that_overflow_the_model_get_400(served: Served) -> None:
    """Finite FP32 values of 3e38 make non-finite logits: the client's input, not a 500."""
    c, h, w = served.input_size
    tensor = {
        "name": "INPUT",
        "datatype": "FP32",
        "shape": [1, c, h, w],
        "data": [3e38] * (c * h * w),
    }
    response = infer_json(
        served.url, served.name, {"inputs": [tensor], "parameters": {"budget": 0.5}}
    )
    assert_error(response, 400, "non-finite logits")
    assert request(served.url, "GET", "/v2/health/live").status == 200


def test_a_batch_above_the_cap_gets_413_and_the_cap_itself_is_served(
    served: Served, rng: np.random.Generator
) -> None:
    cap = 64  # ServedModel's default (serve --max-batch)
    over = infer_json(
        served.url,
        served.name,
        {"inputs": [image_input(random_images(rng, cap + 1, served.input_size))]},
    )
    assert_error(over, 413, f"holds {cap + 1} images", f"at most {cap} per request")
    ok = infer_json(
        served.url,
        served.name,
        {"inputs": [image_input(random_images(rng, cap, served.input_size))]},
    )
    assert ok.status == 200


@pytest.mark.parametrize(
    "parameters, fragment",
    [
        (
            {"budget": "1" + "0" * 400},
            "budget must be a number in [0, 1], got an integer of 1329 bits",
        ),
        ({"budget": "0.5", "seed": "9" * 4000}, "seed must be an integer in [0, 2**63)"),
        ({"budget": "0.5", "seed": "9" * 5000}, "4300"),
        ({"budget": "0.5", "seed": "-1"}, "seed must be an integer in [0, 2**63), got -1"),
    ],
)
def test_huge_numbers_in_parameters_get_400(
    served: Served, rng: np.random.Generator, parameters: dict[str, str], fragment: str
) -> None:
    """Raw JSON numbers, as a client could send them."""
    images = random_images(rng, 1, served.input_size)
    body = (
        '{"inputs": ['
        + json.dumps(image_input(images))
        + '], "parameters": {'
        + ", ".join(f'"{k}": {v}' for k, v in parameters.items())
        + "}}"
    ).encode()
    response = request(
        served.url,
        "POST",
        f"/v2/models/{served.name}/infer",
        body,
        {"Content-Type": "application/json"},
    )
    assert_error(response, 400, fragment)


@pytest.mark.parametrize("length", ["\u00b2", "9" * 5001, "-5", "0"])
def test_bad_header_lengths_get_400(served: Served, length: str) -> None:
    response = request(
        served.url,
        "POST",
        f"/v2/models/{served.name}/infer",
        b"{}",
        {"Inference-Header-Content-Length": length},
    )
    assert_error(response, 400, "Inference-Header-Content-Length")


@pytest.fixture(scope="module")
def small_server(tiny_artifact: Path) -> Any:
    """A server that takes bodies of at most 4096 bytes."""
    model = load_model(tiny_artifact)
    with serving(model, max_body_bytes=4096) as url:
        yield url, model.name
    model.runtime.close()


def test_body_over_the_limit_gets_413_from_its_declared_length(small_server: Any) -> None:
    url, name = small_server
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        # Announce 1 GB and send none of it: the answer must not wait for the body.
        sock.sendall(
            f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 1000000000\r\n\r\n".encode()
        )
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 413
        assert "exceeds the server's limit of 4096 bytes" in json.loads(answer.read())["error"]


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=HANG_S)


def _is_closed(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (it sent nothing, so recv sees the end)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_idle_connections_at_the_cap_make_room_oldest_first(
    tiny_artifact: Path, rng: np.random.Generator
) -> None:
    """127 idle sockets once made every request, health checks included, get 503 until
    they timed out. Now the cap (3 here) is what is served at once, and a newcomer at the
    cap closes the connection idle longest."""
    model = load_model(tiny_artifact)
    health = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    with serving(model, max_connections=3) as url:
        idle = [_connect(url) for _ in range(3)]  # the cap, all idle
        newcomer = _connect(url)
        newcomer.sendall(health)
        assert newcomer.recv(4096).startswith(b"HTTP/1.1 200")
        assert _is_closed(idle[0])  # the oldest made room
        another = _connect(url)  # open now: idle[1], idle[2], newcomer (kept alive), another
        images = random_images(rng, 1, (3, 8, 8))
        body = json.dumps({"inputs": [image_input(images)]}).encode()
        another.sendall(
            f"POST /v2/models/{model.name}/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert another.recv(4096).startswith(b"HTTP/1.1 200")
        assert _is_closed(idle[1])  # the next oldest idle one
        idle[2].sendall(health)  # the newest idle one is still open, and served
        assert idle[2].recv(4096).startswith(b"HTTP/1.1 200")
        for sock in [*idle, newcomer, another]:
            sock.close()
    model.runtime.close()


def test_at_the_cap_with_every_connection_busy_health_is_still_answered(
    tiny_artifact: Path, rng: np.random.Generator
) -> None:
    runtime = GatedRuntime(BudgetRuntime.load(tiny_artifact, backend="onnxruntime", threads=1))
    model = ServedModel(runtime, FixedBudget(0.5))  # type: ignore[arg-type]
    admission = Admission()
    with serving(model, max_connections=3, admission=admission) as url:
        answers: list[Any] = []
        images = random_images(rng, 1, (3, 8, 8))
        busy = [
            threading.Thread(
                target=lambda: answers.append(
                    infer_json(url, model.name, {"inputs": [image_input(images)]})
                )
            )
            for _ in range(3)
        ]
        for thread in busy:
            thread.start()
        wait_until(
            lambda: len(runtime.calls) == 1 and admission.waiting == 2,
            "three requests hold the three connections",
        )
        refused = request(url, "GET", "/v2")
        live = request(url, "GET", "/v2/health/live")
        ready = request(url, "GET", "/v2/health/ready")
        runtime.open()
        for thread in busy:
            thread.join(timeout=HANG_S)
    runtime.close()
    assert refused.status == 503  # uvicorn's plain-text refusal past the cap
    assert live.status == 200
    assert live.json() == {"live": True}
    assert ready.status == 200
    assert [a.status for a in answers] == [200, 200, 200]  # the cap itself is served


def test_chunked_body_over_the_limit_gets_413(small_server: Any) -> None:
    url, name = small_server
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        chunks = iter([b"x" * 3000, b"y" * 3000])  # no Content-Length: sent chunked
        conn.request(
            "POST",
            f"/v2/models/{name}/infer",
            body=chunks,
            headers={"Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        answer = conn.getresponse()
        assert answer.status == 413
        assert "exceeds the server's limit" in json.loads(answer.read())["error"]
    finally:
        conn.close()
    assert request(url, "GET", "/v2/health/ready").status == 200


def test_body_within_the_limit_is_served(small_server: Any) -> None:
    url, name = small_server
    images = np.zeros((1, 8, 8, 3), np.uint8)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "IMAGE",
                    "datatype": "UINT8",
                    "shape": [1, 8, 8, 3],
                    "parameters": {"binary_data_size": images.nbytes},
                }
            ]
        }
    )
    response = request(
        url,
        "POST",
        f"/v2/models/{name}/infer",
        header.encode() + images.tobytes(),
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status == 200


def test_client_leaving_mid_body_is_not_a_server_error(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST /v2/models/{served.name}/infer HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        assert read_head(sock).startswith(b"HTTP/1.1 100")  # the handler reads the body now
        sock.sendall(b"{")
    assert request(served.url, "GET", "/v2/health/live").status == 200
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_internal_failures_get_500_as_json_and_the_server_keeps_serving(
    tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_model(tiny_artifact)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("backend exploded")

    monkeypatch.setattr(model.runtime, "run", broken)
    images = np.zeros((1, 8, 8, 3), np.uint8)
    with serving(model) as url:
        response = infer_json(url, model.name, {"inputs": [image_input(images)]})
        assert_error(response, 500, "RuntimeError: backend exploded")
        assert request(url, "GET", "/v2/health/live").status == 200
    model.runtime.close()


class UnixConnection(http.client.HTTPConnection):
    """http.client over a Unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def test_unix_socket_serves_the_same_protocol(tiny_artifact: Path, tmp_path: Path) -> None:
    model = load_model(tiny_artifact)
    path = str(tmp_path / "serve.sock")
    server = make_server(create_app(model, 1 << 20), log_level="warning")
    thread = threading.Thread(target=run, args=(server, bind_unix(path)), daemon=True)
    thread.start()
    try:
        conn = UnixConnection(path)
        images = np.zeros((1, 8, 8, 3), np.uint8)
        conn.request(
            "POST",
            f"/v2/models/{model.name}/infer",
            body=json.dumps({"inputs": [image_input(images)]}),
        )
        answer = conn.getresponse()
        assert answer.status == 200
        names = [o["name"] for o in json.loads(answer.read())["outputs"]]
        assert names == ["LOGITS", "CLASS", "MASK", "PROBS", "FLOPS"]
        conn.close()
    finally:
        server.should_exit = True
        thread.join(timeout=40)
        model.runtime.close()
    assert not Path(path).exists()  # the socket file goes with the server
