"""Live servers on loopback for the serve tests, on tiny artifacts built like the runtime's.

The artifact builder lives in tests/runtime/conftest.py; it is loaded from its
file because tests/ is not a package (so `tests.runtime` cannot be imported by
name from here).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_artifacts import load_artifact_builder

from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.budget import BudgetController, FixedBudget
from budget_edge.runtime.request import InferenceRequest
from budget_edge.serve.admission import Admission
from budget_edge.serve.app import create_app
from budget_edge.serve.clock import Clock
from budget_edge.serve.model import ServedModel
from budget_edge.serve.server import address_of, bind_tcp, make_server, run

SERVER_BUDGET = 0.5  # the fixed budget of the shared server's controller
HANG_S = 60.0  # how long a test waits for what must happen before calling it a hang


artifacts = load_artifact_builder("_serve_runtime_artifacts")


class ManualClock(Clock):
    """A clock that moves only when the test calls `advance`: every deadline of the
    server (request timeouts, the drain, head and body timeouts) can then be checked
    without waiting for it, and no test asserts how long anything took.

    Timers fire in the event loop that set them, so `advance` may be called from the
    test's thread while the server runs in its own.
    """

    def __init__(self) -> None:
        self._now = 1000.0
        self._lock = threading.Lock()
        self._timers: list[_ManualTimer] = []

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _ManualTimer:
        timer = _ManualTimer(self._now + delay, asyncio.get_running_loop(), callback)
        if delay <= 0:
            timer.loop.call_soon(timer.fire)
            return timer
        with self._lock:
            self._timers.append(timer)
        return timer

    async def wait(self, futures: Iterable[asyncio.Future[Any]], until: float) -> None:
        if until <= self._now:
            return
        alarm = asyncio.get_running_loop().create_future()
        timer = self.call_later(until - self._now, lambda: alarm.done() or alarm.set_result(None))
        try:
            await asyncio.wait({*futures, alarm}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            alarm.cancel()

    def advance(self, seconds: float) -> None:
        """Move the clock; every timer now due fires (in its loop, soon after)."""
        with self._lock:
            self._now += seconds
            due = [t for t in self._timers if t.when <= self._now]
            self._timers = [t for t in self._timers if t.when > self._now and not t.cancelled]
        for timer in due:
            timer.loop.call_soon_threadsafe(timer.fire)

    def pending(self) -> list[float]:
        """In how many seconds each timer set and not yet fired or cancelled is due."""
        with self._lock:
            return sorted(round(t.when - self._now, 6) for t in self._timers if not t.cancelled)


@dataclass
class _ManualTimer:
    when: float
    loop: asyncio.AbstractEventLoop
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.callback()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (the server runs in another thread); the bound only turns a hang
    into a failure, it is no claim about speed."""
    deadline = time.monotonic() + HANG_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.002)


class GatedRuntime:
    """The real runtime, each call waiting for a permit the test gives: a model that is
    busy exactly until the test lets it go. `calls` lists the images of each call."""

    def __init__(self, runtime: BudgetRuntime) -> None:
        self._runtime = runtime
        self.calls: list[int] = []
        self._permits = threading.Semaphore(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    def run(self, request: InferenceRequest) -> Any:
        self.calls.append(len(np.asarray(request.images)))
        assert self._permits.acquire(timeout=HANG_S), "the test never let the call run"
        return self._runtime.run(request)

    def allow(self, calls: int = 1) -> None:
        """Let `calls` more calls run (those waiting first)."""
        self._permits.release(calls)

    def open(self) -> None:
        """Let every call run from now on."""
        self._permits.release(1_000_000)


@contextmanager
def serving(
    model: ServedModel,
    max_body_bytes: int = 16 << 20,
    max_connections: int = 128,
    token: str | None = None,
    admission: Admission | None = None,
    head_timeout_s: float = 10.0,
    keep_alive_s: float = 5.0,
) -> Iterator[str]:
    """Run `model` on 127.0.0.1 (a free port) in a thread; yield its http://host:port.
    The server's clock is the admission's (pass Admission(clock=ManualClock()))."""
    admission = admission or Admission()
    app = create_app(model, max_body_bytes, token=token, admission=admission)
    server = make_server(
        app,
        log_level="warning",
        max_connections=max_connections,
        admission=admission,
        head_timeout_s=head_timeout_s,
        keep_alive_s=keep_alive_s,
    )
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


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """One raw HTTP request (a fresh connection, 30 s timeout)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return Response(
            answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        )
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
    return request(
        url, "POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"}
    )


def image_input(images: np.ndarray) -> dict[str, Any]:
    """A JSON IMAGE tensor of uint8 NHWC pixels."""
    return {
        "name": "IMAGE",
        "datatype": "UINT8",
        "shape": list(images.shape),
        "data": images.ravel().tolist(),
    }


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


def load_model(
    path: Path, controller: BudgetController | None = None, name: str | None = None
) -> ServedModel:
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
