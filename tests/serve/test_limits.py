"""Server limits on a live server: chunked batches, a full queue, deadlines, an orderly stop,
head and body timeouts, Prometheus metrics and Triton's repository index."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.budget import FixedBudget
from budget_edge.serve import app as app_module
from budget_edge.serve.admission import Admission
from budget_edge.serve.app import create_app
from budget_edge.serve.model import ServedModel
from budget_edge.serve.server import address_of, bind_tcp, make_server, run

from .conftest import (
    SERVER_BUDGET,
    Response,
    Served,
    image_input,
    infer_json,
    random_images,
    request,
)


class SlowRuntime:
    """The real runtime, taking `delay` seconds more per call: a model that is busy."""

    def __init__(self, runtime: BudgetRuntime, delay: float) -> None:
        self._runtime = runtime
        self.delay = delay
        self.calls: list[int] = []  # images per call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    def infer(self, images: Any, **kwargs: Any) -> Any:
        self.calls.append(len(images))
        time.sleep(self.delay)
        return self._runtime.infer(images, **kwargs)


@contextmanager
def slow_server(path: Path, delay: float, admission: Admission | None = None,
                chunk: int = 16) -> Iterator[tuple[str, Any, SlowRuntime, Admission]]:
    """A live server of a slow model; yields (url, uvicorn server, runtime, admission)."""
    runtime = SlowRuntime(BudgetRuntime.load(path, backend="onnxruntime", threads=1), delay)
    model = ServedModel(runtime, FixedBudget(SERVER_BUDGET), chunk=chunk)  # type: ignore[arg-type]
    admission = admission or Admission()
    server = make_server(create_app(model, 16 << 20, admission=admission),
                         log_level="warning", admission=admission)
    sock = bind_tcp("127.0.0.1", 0)
    thread = threading.Thread(target=run, args=(server, sock), daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    try:
        yield address_of(sock), server, runtime, admission
    finally:
        server.should_exit = True
        thread.join(timeout=40)
        runtime.close()


def _infer(url: str, images: np.ndarray, **parameters: Any) -> Response:
    header = {"inputs": [image_input(images)], "parameters": parameters}
    return infer_json(url, "tiny-resnet", header)


def _wait_until(condition: Any, timeout: float = 20.0) -> None:
    """Poll instead of sleeping a fixed time: a loaded CI machine may be slow to start."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _in_thread(target: Any, results: list[Any], *args: Any) -> threading.Thread:
    def call() -> None:
        start = time.monotonic()
        answer = target(*args)
        results.append((answer, time.monotonic() - start))

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_a_large_batch_runs_in_chunks_and_answers_like_one_call(
        served: Served, rng: np.random.Generator) -> None:
    images = random_images(rng, 40, served.input_size)  # chunks of 16, 16 and 8
    answer = _infer(served.url, images, budget=0.6)
    assert answer.status == 200
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"])
               for o in answer.json()["outputs"]}
    want = served.runtime.infer(images, budget=0.6)
    np.testing.assert_allclose(outputs["LOGITS"], want.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["MASK"], want.mask.astype(bool))
    np.testing.assert_allclose(outputs["PROBS"], want.probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["FLOPS"], want.flops)


def test_sampled_masks_are_not_chunked_so_they_match_one_call(
        served: Served, rng: np.random.Generator) -> None:
    """Each chunk would restart the seeded draws: rows 0, 16, 32 would share them."""
    images = random_images(rng, 40, served.input_size)
    answer = _infer(served.url, images, budget=0.5, mode="sample", seed=7)
    assert answer.status == 200
    mask = next(o for o in answer.json()["outputs"] if o["name"] == "MASK")
    want = served.runtime.infer(images, budget=0.5, mode="sample", seed=7)
    np.testing.assert_array_equal(np.asarray(mask["data"]).reshape(mask["shape"]),
                                  want.mask.astype(bool))


def test_a_small_request_is_served_between_the_chunks_of_a_large_one(
        tiny_artifact: Path, rng: np.random.Generator) -> None:
    """A 64-image request once made a one-image request wait for all of it."""
    with slow_server(tiny_artifact, delay=0.2) as (url, _, runtime, _):
        big: list[Any] = []
        thread = _in_thread(_infer, big, url, random_images(rng, 64, (3, 8, 8)))
        _wait_until(lambda: len(runtime.calls) >= 1)  # the first chunk is running
        start = time.monotonic()
        small = _infer(url, random_images(rng, 1, (3, 8, 8)))
        small_s = time.monotonic() - start
        thread.join(timeout=30)
    assert small.status == 200 and big[0][0].status == 200
    assert runtime.calls[:2] == [16, 1]  # the small one ran right after the first chunk
    assert small_s < big[0][1] - 0.3


def test_a_full_queue_gets_503_with_retry_after_as_json(
        tiny_artifact: Path, rng: np.random.Generator) -> None:
    with slow_server(tiny_artifact, 0.5, Admission(max_queue=2)) as (url, _, runtime,
                                                                      admission):
        answers: list[Any] = []
        threads = [_in_thread(_infer, answers, url, random_images(rng, 1, (3, 8, 8)))]
        _wait_until(lambda: len(runtime.calls) >= 1)
        threads += [_in_thread(_infer, answers, url, random_images(rng, 1, (3, 8, 8)))
                    for _ in range(2)]
        _wait_until(lambda: admission.waiting >= 2)
        start = time.monotonic()
        refused = _infer(url, random_images(rng, 1, (3, 8, 8)))
        refused_s = time.monotonic() - start
        for thread in threads:
            thread.join(timeout=30)
    assert refused.status == 503 and refused_s < 0.4
    assert refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["error"]
    assert [a.status for a, _ in answers] == [200, 200, 200]


def test_the_clients_timeout_parameter_bounds_its_wait(
        tiny_artifact: Path, rng: np.random.Generator) -> None:
    with slow_server(tiny_artifact, delay=1.0) as (url, _, runtime, _):
        answers: list[Any] = []
        thread = _in_thread(_infer, answers, url, random_images(rng, 1, (3, 8, 8)))
        _wait_until(lambda: len(runtime.calls) >= 1)
        start = time.monotonic()
        late = _infer(url, random_images(rng, 1, (3, 8, 8)), timeout=200_000)  # 0.2 s in us
        late_s = time.monotonic() - start
        thread.join(timeout=30)
    assert late.status == 503 and "deadline" in late.json()["error"]
    assert 0.15 < late_s < 0.8


def test_stopping_answers_every_request_in_flight_with_json_within_the_drain_bound(
        tiny_artifact: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM once left 17 queued requests a plain-text 500 after 57 s."""
    monkeypatch.setattr("budget_edge.serve.admission.DRAIN_S", 1.0)
    with slow_server(tiny_artifact, delay=0.4) as (url, server, _, admission):
        answers: list[Any] = []
        threads = [_in_thread(_infer, answers, url, random_images(rng, 1, (3, 8, 8)))
                   for _ in range(8)]
        _wait_until(lambda: admission.waiting >= 7)
        start = time.monotonic()
        server.should_exit = True  # what SIGTERM sets
        for thread in threads:
            thread.join(timeout=30)
        stopped_s = time.monotonic() - start
    statuses = sorted(a.status for a, _ in answers)
    assert len(answers) == 8 and stopped_s < 1.0 + 0.4 + 1.0
    assert set(statuses) == {200, 503}  # some ran within the bound, the rest were told
    for answer, _ in answers:
        body = answer.json()  # JSON, never plain text
        assert answer.status == 200 or "shutting down" in body["error"]


def _raw_socket(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed the socket, or None if it stayed open."""
    sock.settimeout(seconds)
    start = time.monotonic()
    try:
        while sock.recv(1024):
            pass
    except TimeoutError:
        return None
    finally:
        sock.close()
    return time.monotonic() - start


@pytest.fixture
def fast_timeout_server(tiny_artifact: Path) -> Iterator[str]:
    from .conftest import load_model, serving

    model = load_model(tiny_artifact)
    with serving(model, head_timeout_s=0.5) as url:
        yield url
    model.runtime.close()


@pytest.mark.parametrize("sent", [b"", b"POST /v2/models/tiny-resnet/infer HTTP/1.1\r\nHost: x"])
def test_idle_and_slow_header_connections_are_closed_after_the_head_timeout(
        fast_timeout_server: str, sent: bytes) -> None:
    sock = _raw_socket(fast_timeout_server)
    sock.sendall(sent)
    closed = _closed_within(sock, 5.0)
    assert closed is not None and closed < 2.0


def test_a_header_trickled_byte_by_byte_is_cut_off(fast_timeout_server: str) -> None:
    """Each byte restarted uvicorn's keep-alive timer; the head deadline does not move."""
    sock = _raw_socket(fast_timeout_server)
    start = time.monotonic()
    try:
        for byte in b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100:
            sock.sendall(bytes([byte]))
            time.sleep(0.05)
            if time.monotonic() - start > 4:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert time.monotonic() - start < 3.0
    sock.close()


def test_a_kept_alive_connection_gets_a_new_head_deadline(fast_timeout_server: str) -> None:
    sock = _raw_socket(fast_timeout_server)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert b"200 OK" in sock.recv(4096)
    sock.sendall(b"GET /v2/health/li")  # then nothing more
    closed = _closed_within(sock, 5.0)
    assert closed is not None and closed < 2.0


def test_a_stalled_body_gets_408_as_json(served: Served,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "BODY_TIMEOUT_S", 0.3)
    sock = _raw_socket(served.url)
    sock.sendall(b"POST /v2/models/tiny-resnet/infer HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"in")
    sock.settimeout(5)
    answer = b""
    while b"}" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert "did not arrive within 0.3 s" in json.loads(body)["error"]


def test_prometheus_metrics_count_requests_usage_and_queue(
        tiny_artifact: Path, rng: np.random.Generator) -> None:
    from .conftest import load_model, serving

    model = load_model(tiny_artifact)
    with serving(model) as url:
        assert _infer(url, random_images(rng, 3, (3, 8, 8)), budget=0.7).status == 200
        assert _infer(url, random_images(rng, 2, (3, 8, 8))).status == 200
        assert _infer(url, random_images(rng, 1, (3, 8, 8)), budget=7).status == 400
        scraped = request(url, "GET", "/metrics")
    model.runtime.close()
    assert scraped.status == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.body.decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line and not line.startswith("#")}
    assert values['budget_edge_requests_total{code="200",route="infer"}'] == 2
    assert values['budget_edge_requests_total{code="400",route="infer"}'] == 1
    assert values["budget_edge_image_usage_count"] == 5  # one observation per image
    assert 0 < values["budget_edge_image_usage_sum"] <= 5
    assert values["budget_edge_budget"] == SERVER_BUDGET  # the last run: the server's choice
    assert values["budget_edge_queue_depth"] == 0
    assert values['budget_edge_request_seconds_count{route="infer"}'] == 3
    assert values["budget_edge_model_seconds_count"] == 2


def test_the_repository_index_lists_the_model(served: Served) -> None:
    answer = request(served.url, "POST", "/v2/repository/index", b"{}")
    assert answer.status == 200
    assert answer.json() == [{"name": served.name, "version": "1", "state": "READY",
                              "reason": ""}]
