"""Live servers on loopback for the serve tests, on tiny artifacts built like the runtime's.

The artifact builder lives in tests/runtime/conftest.py; it is loaded from its
file because tests/ is not a package (so `tests.runtime` cannot be imported by
name from here).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_artifacts import load_artifact_builder

from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.budget import BudgetController, FixedBudget
from budget_edge.serve.admission import Admission
from budget_edge.serve.app import create_app
from budget_edge.serve.model import ServedModel
from budget_edge.serve.server import address_of, bind_tcp, make_server, run

SERVER_BUDGET = 0.5  # the fixed budget of the shared server's controller


artifacts = load_artifact_builder("_serve_runtime_artifacts")


@contextmanager
def serving(model: ServedModel, max_body_bytes: int = 16 << 20,
            max_concurrency: int = 128, token: str | None = None,
            admission: Admission | None = None, head_timeout_s: float = 10.0) -> Iterator[str]:
    """Run `model` on 127.0.0.1 (a free port) in a thread; yield its http://host:port."""
    admission = admission or Admission()
    app = create_app(model, max_body_bytes, token=token, admission=admission)
    server = make_server(app, log_level="warning", max_concurrency=max_concurrency,
                         admission=admission, head_timeout_s=head_timeout_s)
    sock = bind_tcp("127.0.0.1", 0)
    url = address_of(sock)
    thread = threading.Thread(target=run, args=(server, sock), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "test server did not start"
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=40)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(url: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Response:
    """One raw HTTP request (a fresh connection, 30 s timeout)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()},
                        answer.read())
    finally:
        conn.close()


def read_head(sock: socket.socket) -> bytes:
    """Bytes up to the end of one response head (the 100 Continue is all there is yet)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        assert chunk, "connection closed"
        head += chunk
    return head


def infer_json(url: str, model: str, header: dict[str, Any]) -> Response:
    body = json.dumps(header).encode()
    return request(url, "POST", f"/v2/models/{model}/infer", body,
                   {"Content-Type": "application/json"})


def image_input(images: np.ndarray) -> dict[str, Any]:
    """A JSON IMAGE tensor of uint8 NHWC pixels."""
    return {"name": "IMAGE", "datatype": "UINT8", "shape": list(images.shape),
            "data": images.ravel().tolist()}


def random_images(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 NHWC pixels for a model whose input_size is (C, H, W)."""
    c, h, w = shape
    return rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


@dataclass
class Served:
    """A tiny artifact, a runtime to check answers with, and a live server of it."""

    path: Path
    runtime: BudgetRuntime  # separate from the server's: answers are checked against it
    model: ServedModel
    url: str

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def input_size(self) -> tuple[int, int, int]:
        c, h, w = self.runtime.manifest.preprocessing.input_size
        return (c, h, w)


def load_model(path: Path, controller: BudgetController | None = None,
               name: str | None = None) -> ServedModel:
    runtime = BudgetRuntime.load(path, backend="onnxruntime", threads=1)
    return ServedModel(runtime, controller or FixedBudget(SERVER_BUDGET), name=name)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three one-path blocks, a policy, the full graph and a hot policy (8x8 RGB images)."""
    path = tmp_path_factory.mktemp("serve-resnet")
    artifacts.write_artifact(artifacts.make_net("resnet"), path, hot=[[1, 0, 1]])
    return path


@pytest.fixture(scope="session")
def served(tiny_artifact: Path) -> Iterator[Served]:
    """One live server for the whole session (fixed budget SERVER_BUDGET)."""
    model = load_model(tiny_artifact)
    reference = BudgetRuntime.load(tiny_artifact, backend="onnxruntime", threads=1)
    with serving(model) as url:
        yield Served(tiny_artifact, reference, model, url)
    reference.close()
    model.runtime.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


