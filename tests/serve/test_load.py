"""A bounded load test on loopback: 64 clients of small requests, one client sending the
largest batch the server takes, and sockets trickling their headers, all at once.

Every small request must be answered correctly within SMALL_BOUND_S, every maximal
batch correctly, and every slow socket closed by the head timeout: one allowed request
once stalled everyone for 45 s, and idle sockets once exhausted the file descriptors.
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
from budget_edge.serve.model import DEFAULT_MAX_BATCH

from .conftest import (
    SERVER_BUDGET,
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
HEAD_TIMEOUT_S = 1.0
SMALL_BOUND_S = 5.0  # the stated bound for one small request under this load


@dataclass
class Outcome:
    small_seconds: list[float] = field(default_factory=list)
    big_seconds: list[float] = field(default_factory=list)
    slow_closed_after: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _check(answer: Response, images: np.ndarray, budget: float,
           runtime: BudgetRuntime) -> str | None:
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


def _small_client(url: str, name: str, seed: int, reference: BudgetRuntime,
                  out: Outcome) -> None:
    rng = np.random.default_rng(seed)
    for i in range(SMALL_REQUESTS):
        images = random_images(rng, int(rng.integers(1, 4)), (3, 8, 8))
        budget = round(float(rng.random()), 3)
        start = time.monotonic()
        answer = infer_json(url, name, {"inputs": [image_input(images)],
                                        "parameters": {"budget": budget}})
        out.small_seconds.append(time.monotonic() - start)
        problem = _check(answer, images, budget, reference)
        if problem:
            out.errors.append(f"client {seed} request {i}: {problem}")


def _big_client(url: str, name: str, reference: BudgetRuntime, out: Outcome) -> None:
    rng = np.random.default_rng(999)
    for i in range(BIG_REQUESTS):
        images = random_images(rng, DEFAULT_MAX_BATCH, (3, 8, 8))
        start = time.monotonic()
        answer = infer_json(url, name, {"inputs": [image_input(images)]})
        out.big_seconds.append(time.monotonic() - start)
        problem = _check(answer, images, SERVER_BUDGET, reference)
        if problem:
            out.errors.append(f"maximal batch {i}: {problem}")


def _slow_socket(url: str, out: Outcome) -> None:
    """Send a header one byte every 0.1 s; note when the server hangs up."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    start = time.monotonic()
    try:
        for byte in b"POST /v2/models/x/infer HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
            sock.sendall(bytes([byte]))
            time.sleep(0.1)
        out.errors.append("a slow-header socket was never closed")
    except OSError:  # broken pipe or reset: the server closed it
        out.slow_closed_after.append(time.monotonic() - start)
    finally:
        sock.close()


def test_small_requests_stay_fast_and_correct_beside_a_maximal_batch_and_slow_sockets(
        tiny_artifact: Path) -> None:
    model = load_model(tiny_artifact)
    reference = load_model(tiny_artifact).runtime
    process = psutil.Process()
    out = Outcome()
    with serving(model, head_timeout_s=HEAD_TIMEOUT_S) as url:
        rss_before = process.memory_info().rss
        threads = [threading.Thread(target=_slow_socket, args=(url, out))
                   for _ in range(SLOW_SOCKETS)]
        threads.append(threading.Thread(target=_big_client,
                                        args=(url, model.name, reference, out)))
        threads += [threading.Thread(target=_small_client,
                                     args=(url, model.name, seed, reference, out))
                    for seed in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        hung = sum(thread.is_alive() for thread in threads)
        rss_growth_mb = (process.memory_info().rss - rss_before) / 2**20
    model.runtime.close()
    reference.close()

    assert hung == 0, f"{hung} clients did not finish"
    assert out.errors == []
    assert len(out.small_seconds) == CLIENTS * SMALL_REQUESTS
    assert len(out.big_seconds) == BIG_REQUESTS
    assert max(out.small_seconds) < SMALL_BOUND_S, sorted(out.small_seconds)[-5:]
    # Closed by the head timeout, not after the whole header trickled in (20+ s).
    assert len(out.slow_closed_after) == SLOW_SOCKETS
    assert max(out.slow_closed_after) < HEAD_TIMEOUT_S + 2.0
    # The clients run in this process too; the bound is loose, the leak it catches is not
    # (a 4096-image JSON batch once left 827 MB behind).
    assert rss_growth_mb < 300
