"""A load test on loopback: 64 clients of small requests, one client sending the largest
batch the server takes, and sockets trickling their headers, all at once.

Every small request and every maximal batch must be answered, correctly, and every
slow socket closed by the head timeout (on a manual clock, moved once the clients are
done): one allowed request once stalled everyone for 45 s, and idle sockets once
exhausted the file descriptors. That a small request waits for at most one chunk of a
large one is checked exactly in test_limits.py; no test here times anything.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from budget_edge.runtime import BudgetRuntime
from budget_edge.serve.admission import Admission
from budget_edge.serve.model import DEFAULT_MAX_BATCH

from .conftest import (
    HANG_S,
    SERVER_BUDGET,
    ManualClock,
    Response,
    image_input,
    infer_json,
    load_model,
    random_images,
    serving,
)

CLIENTS = 64
SMALL_REQUESTS = 8  # per client
BIG_REQUESTS = 6
SLOW_SOCKETS = 8
HEAD_TIMEOUT_S = 10.0


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)  # "small", "big" or "slow closed" each
    errors: list[str] = field(default_factory=list)


def _check(
    answer: Response, images: np.ndarray, budget: float, runtime: BudgetRuntime
) -> str | None:
    """None if the answer is the runtime's own, else what differs."""
    if answer.status != 200:
        return f"status {answer.status}: {answer.body[:200]!r}"
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    want = runtime.infer(images, budget=budget)
    logits = np.asarray(outputs["LOGITS"]["data"], np.float32).reshape(want.logits.shape)
    if not np.allclose(logits, want.logits, rtol=1e-4, atol=1e-5):
        return "logits differ from the runtime's"
    if np.asarray(outputs["MASK"]["data"]).tolist() != want.mask.astype(bool).ravel().tolist():
        return "mask differs from the runtime's"
    return None


def _small_client(url: str, name: str, seed: int, reference: BudgetRuntime, out: Outcome) -> None:
    rng = np.random.default_rng(seed)
    for i in range(SMALL_REQUESTS):
        images = random_images(rng, int(rng.integers(1, 4)), (3, 8, 8))
        budget = round(float(rng.random()), 3)
        answer = infer_json(
            url, name, {"inputs": [image_input(images)], "parameters": {"budget": budget}}
        )
        out.done.append("small")
        problem = _check(answer, images, budget, reference)
        if problem:
            out.errors.append(f"client {seed} request {i}: {problem}")


def _big_client(url: str, name: str, reference: BudgetRuntime, out: Outcome) -> None:
    rng = np.random.default_rng(999)
    for i in range(BIG_REQUESTS):
        images = random_images(rng, DEFAULT_MAX_BATCH, (3, 8, 8))
        answer = infer_json(url, name, {"inputs": [image_input(images)]})
        out.done.append("big")
        problem = _check(answer, images, SERVER_BUDGET, reference)
        if problem:
            out.errors.append(f"maximal batch {i}: {problem}")


def _slow_socket(url: str, started: threading.Event, out: Outcome) -> None:
    """Trickle half a request head during the load, then wait for the server to hang up."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=HANG_S)
    started.set()
    try:
        for byte in b"POST /v2/models/x/infer HTTP/1.1\r\nHost: x\r\nX-Slow: aaaa":
            sock.sendall(bytes([byte]))
            time.sleep(0.02)  # a slow client, not a measurement
        while sock.recv(1024):
            pass
        out.done.append("slow closed")
    except TimeoutError:  # the hang guard
        out.errors.append("a slow-header socket was never closed")
    except OSError:  # reset, or a broken pipe while it still sent: closed too
        out.done.append("slow closed")
    finally:
        sock.close()


def test_small_requests_and_maximal_batches_are_answered_beside_slow_sockets(
    tiny_artifact: Path,
) -> None:
    model = load_model(tiny_artifact)
    reference = load_model(tiny_artifact).runtime
    process = psutil.Process()
    out = Outcome()
    clock = ManualClock()
    with serving(model, admission=Admission(clock=clock), head_timeout_s=HEAD_TIMEOUT_S) as url:
        rss_before = process.memory_info().rss
        connected = [threading.Event() for _ in range(SLOW_SOCKETS)]
        slow = [
            threading.Thread(target=_slow_socket, args=(url, event, out)) for event in connected
        ]
        clients = [threading.Thread(target=_big_client, args=(url, model.name, reference, out))]
        clients += [
            threading.Thread(target=_small_client, args=(url, model.name, seed, reference, out))
            for seed in range(CLIENTS)
        ]
        for thread in slow + clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=HANG_S * 2)
        for event in connected:
            event.wait(timeout=HANG_S)
        clock.advance(HEAD_TIMEOUT_S)  # now every slow socket is past its head deadline
        for thread in slow:
            thread.join(timeout=HANG_S)
        hung = sum(thread.is_alive() for thread in slow + clients)
        rss_growth_mb = (process.memory_info().rss - rss_before) / 2**20
    model.runtime.close()
    reference.close()

    assert hung == 0, f"{hung} clients did not finish"
    assert out.errors == []
    assert out.done.count("small") == CLIENTS * SMALL_REQUESTS
    assert out.done.count("big") == BIG_REQUESTS
    assert out.done.count("slow closed") == SLOW_SOCKETS  # by the head timeout
    # The clients run in this process too; the bound is loose, the leak it catches is not
    # (a 4096-image JSON batch once left 827 MB behind).
    assert rss_growth_mb < 300
