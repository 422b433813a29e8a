"""Server limits on a live server: chunked batches, a full queue, deadlines, an orderly stop,
head and body timeouts, Prometheus metrics and Triton's repository index.

The model is held busy by a GatedRuntime until the test lets it go, and time is a
ManualClock the test moves, so each limit is checked by what the server answers, never
by how long anything took.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.budget import FixedBudget
from budget_edge.serve import app as app_module
from budget_edge.serve.admission import DRAIN_S, Admission
from budget_edge.serve.app import create_app
from budget_edge.serve.model import ServedModel
from budget_edge.serve.server import address_of, bind_tcp, make_server, run

from .conftest import (
    HANG_S,
    SERVER_BUDGET,
    GatedRuntime,
    ManualClock,
    Response,
    Served,
    image_input,
    infer_json,
    load_model,
    random_images,
    request,
    serving,
    wait_until,
)


@contextmanager
def gated_server(
    path: Path, max_queue: int = 100
) -> Iterator[tuple[str, Any, GatedRuntime, Admission, ManualClock]]:
    """A live server whose model runs only when the test allows it, on a manual clock;
    yields (url, uvicorn server, runtime, admission, clock)."""
    runtime = GatedRuntime(BudgetRuntime.load(path, backend="onnxruntime", threads=1))
    model = ServedModel(runtime, FixedBudget(SERVER_BUDGET))  # type: ignore[arg-type]
    clock = ManualClock()
    admission = Admission(max_queue=max_queue, clock=clock)
    server = make_server(
        create_app(model, 16 << 20, admission=admission), log_level="warning", admission=admission
    )
    sock = bind_tcp("127.0.0.1", 0)
    thread = threading.Thread(target=run, args=(server, sock), daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "the server started")
    try:
        yield address_of(sock), server, runtime, admission, clock
    finally:
        runtime.open()
        server.should_exit = True
        thread.join(timeout=HANG_S)
        runtime.close()


def _infer(url: str, images: np.ndarray, **parameters: Any) -> Response:
    header = {"inputs": [image_input(images)], "parameters": parameters}
    return infer_json(url, "tiny-resnet", header)


def _in_thread(target: Any, results: list[Any], *args: Any, **kwargs: Any) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(target(*args, **kwargs)))
    thread.start()
    return thread


def _one(rng: np.random.Generator) -> np.ndarray:
    return random_images(rng, 1, (3, 8, 8))


def test_a_large_batch_runs_in_chunks_and_answers_like_one_call(
    served: Served, rng: np.random.Generator
) -> None:
    images = random_images(rng, 40, served.input_size)  # chunks of 16, 16 and 8
    answer = _infer(served.url, images, budget=0.6)
    assert answer.status == 200
    outputs = {
        o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]
    }
    want = served.runtime.infer(images, budget=0.6)
    np.testing.assert_allclose(outputs["LOGITS"], want.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["MASK"], want.mask.astype(bool))
    np.testing.assert_allclose(outputs["PROBS"], want.probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["FLOPS"], want.flops)


def test_sampled_masks_are_not_chunked_so_they_match_one_call(
    served: Served, rng: np.random.Generator
) -> None:
    """Each chunk would restart the seeded draws: rows 0, 16, 32 would share them."""
    images = random_images(rng, 40, served.input_size)
    answer = _infer(served.url, images, budget=0.5, mode="sample", seed=7)
    assert answer.status == 200
    mask = next(o for o in answer.json()["outputs"] if o["name"] == "MASK")
    want = served.runtime.infer(images, budget=0.5, mode="sample", seed=7)
    np.testing.assert_array_equal(
        np.asarray(mask["data"]).reshape(mask["shape"]), want.mask.astype(bool)
    )


def test_a_small_request_is_served_between_the_chunks_of_a_large_one(
    tiny_artifact: Path, rng: np.random.Generator
) -> None:
    """A 64-image request once made a one-image request wait for all of it."""
    with gated_server(tiny_artifact) as (url, _, runtime, admission, _):
        big: list[Response] = []
        thread = _in_thread(_infer, big, url, random_images(rng, 64, (3, 8, 8)))
        wait_until(lambda: len(runtime.calls) == 1, "the first chunk runs")
        small: list[Response] = []
        small_thread = _in_thread(_infer, small, url, _one(rng))
        wait_until(lambda: admission.waiting == 1, "the small request waits")
        runtime.open()
        thread.join(timeout=HANG_S)
        small_thread.join(timeout=HANG_S)
    assert small[0].status == 200
    assert big[0].status == 200
    assert runtime.calls == [16, 1, 16, 16, 16]  # the small one ran right after one chunk


def test_a_full_queue_gets_503_with_retry_after_as_json_while_the_model_is_busy(
    tiny_artifact: Path, rng: np.random.Generator
) -> None:
    with gated_server(tiny_artifact, max_queue=2) as (url, _, runtime, admission, _):
        answers: list[Response] = []
        threads = [_in_thread(_infer, answers, url, _one(rng))]
        wait_until(lambda: len(runtime.calls) == 1, "the first request runs")
        threads += [_in_thread(_infer, answers, url, _one(rng)) for _ in range(2)]
        wait_until(lambda: admission.waiting == 2, "two requests wait")
        refused = _infer(url, _one(rng))
        assert runtime.calls == [1]  # refused while the first one still held the model
        runtime.open()
        for thread in threads:
            thread.join(timeout=HANG_S)
    assert refused.status == 503
    assert refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["error"]
    assert [a.status for a in answers] == [200, 200, 200]


def test_the_clients_timeout_parameter_bounds_its_wait(
    tiny_artifact: Path, rng: np.random.Generator
) -> None:
    with gated_server(tiny_artifact) as (url, _, runtime, admission, clock):
        answers: list[Response] = []
        first = _in_thread(_infer, answers, url, _one(rng))
        wait_until(lambda: len(runtime.calls) == 1, "the first request runs")
        late: list[Response] = []
        waiting = _in_thread(_infer, late, url, _one(rng), timeout=200_000)  # 0.2 s in us
        wait_until(lambda: admission.waiting == 1, "the second request waits")
        clock.advance(0.19)
        assert admission.waiting == 1  # nothing is due before 0.2 s
        clock.advance(0.02)
        waiting.join(timeout=HANG_S)
        runtime.open()
        first.join(timeout=HANG_S)
    assert late[0].status == 503
    assert "deadline" in late[0].json()["error"]
    assert answers[0].status == 200


def test_stopping_answers_every_request_in_flight_with_json(
    tiny_artifact: Path, rng: np.random.Generator
) -> None:
    """SIGTERM once left 17 queued requests a plain-text 500 after 57 s. The running
    request and those that get the model within the drain bound are answered 200; the
    rest 503, as JSON."""
    with gated_server(tiny_artifact) as (url, server, runtime, admission, clock):
        answers: list[Response] = []
        threads = [_in_thread(_infer, answers, url, _one(rng))]
        wait_until(lambda: len(runtime.calls) == 1, "the first request runs")
        threads += [_in_thread(_infer, answers, url, _one(rng)) for _ in range(7)]
        wait_until(lambda: admission.waiting == 7, "seven requests wait")
        server.should_exit = True  # what SIGTERM sets
        wait_until(lambda: admission.closing, "the server begins to stop")
        runtime.allow(3)  # within the drain bound, three more get the model
        wait_until(lambda: len(runtime.calls) == 4, "three more requests ran")
        clock.advance(DRAIN_S + 0.1)  # the drain bound passes with four still waiting
        wait_until(lambda: admission.waiting == 0, "the waiting requests are answered")
        runtime.open()  # the fourth, already running, finishes
        for thread in threads:
            thread.join(timeout=HANG_S)
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * 4 + [503] * 4
    for answer in answers:
        body = answer.json()  # JSON, never plain text
        assert answer.status == 200 or "shutting down" in body["error"]


# ---- head and body timeouts, on a manual clock -------------------------------------

HEAD_S, KEEP_ALIVE_S = 10.0, 5.0


@pytest.fixture
def clocked(tiny_artifact: Path) -> Iterator[tuple[str, ManualClock]]:
    """A server on a manual clock (head timeout HEAD_S, keep-alive KEEP_ALIVE_S)."""
    model = load_model(tiny_artifact)
    clock = ManualClock()
    with serving(
        model, admission=Admission(clock=clock), head_timeout_s=HEAD_S, keep_alive_s=KEEP_ALIVE_S
    ) as url:
        yield url, clock
    model.runtime.close()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=HANG_S)


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the socket (read to the end; the socket's timeout is
    only a hang guard)."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return True


HEALTH = b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.mark.parametrize("sent", [b"", b"POST /v2/models/tiny-resnet/infer HTTP/1.1\r\nHost: x"])
def test_idle_and_slow_header_connections_are_closed_at_the_head_timeout(
    clocked: tuple[str, ManualClock], sent: bytes
) -> None:
    url, clock = clocked
    sock = _connect(url)
    sock.sendall(sent)
    wait_until(lambda: clock.pending() == [HEAD_S], "the connection's head timer is set")
    clock.advance(HEAD_S)
    assert _closed(sock)


def test_a_connection_within_its_head_timeout_is_served(clocked: tuple[str, ManualClock]) -> None:
    url, clock = clocked
    sock = _connect(url)
    wait_until(lambda: clock.pending() == [HEAD_S], "the connection's head timer is set")
    clock.advance(HEAD_S - 0.1)
    sock.sendall(HEALTH)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    sock.close()


def test_a_header_trickled_byte_by_byte_is_cut_off_at_the_head_timeout(
    clocked: tuple[str, ManualClock],
) -> None:
    """Each byte restarted uvicorn's keep-alive timer; the head deadline does not move."""
    url, clock = clocked
    sock = _connect(url)
    wait_until(lambda: clock.pending() == [HEAD_S], "the connection's head timer is set")
    for byte in b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaa":
        sock.sendall(bytes([byte]))
        clock.advance(HEAD_S / 100)  # 52 bytes: half the timeout
    clock.advance(HEAD_S / 2)
    assert _closed(sock)


def test_a_kept_alive_connection_gets_the_keep_alive_deadline(
    clocked: tuple[str, ManualClock],
) -> None:
    url, clock = clocked
    sock = _connect(url)
    sock.sendall(HEALTH)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    wait_until(lambda: clock.pending() == [KEEP_ALIVE_S], "the keep-alive timer is set")
    sock.sendall(b"GET /v2/health/li")  # then nothing more
    clock.advance(KEEP_ALIVE_S)
    assert _closed(sock)


def test_a_stalled_body_gets_408_as_json(clocked: tuple[str, ManualClock]) -> None:
    url, clock = clocked
    sock = _connect(url)
    sock.sendall(
        b"POST /v2/models/tiny-resnet/infer HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"in'
    )
    # Once the head arrived its timer is off: the body's deadline is the one timer left.
    wait_until(lambda: clock.pending() == [app_module.BODY_TIMEOUT_S], "the body's deadline")
    clock.advance(app_module.BODY_TIMEOUT_S)
    answer = b""
    while b"}" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert "did not arrive within 30 s" in json.loads(body)["error"]


def test_prometheus_metrics_count_requests_usage_and_queue(
    tiny_artifact: Path, rng: np.random.Generator
) -> None:
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
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
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
    assert answer.json() == [{"name": served.name, "version": "1", "state": "READY", "reason": ""}]
