"""Many clients at once: each of 32 x 20 requests gets its own answer, equal to a direct call."""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from budget_edge.serve.tensors import DATATYPES

from .conftest import SERVER_BUDGET, Served, random_images

CLIENTS = 32
REQUESTS = 20


@dataclass
class Sent:
    images: np.ndarray
    budget: float | None  # None: the server's controller decides
    outputs: dict[str, np.ndarray]


def encode(images: np.ndarray, budget: float | None, binary: bool) -> tuple[bytes, dict]:
    header: dict[str, Any] = {"parameters": {"binary_data_output": binary}}
    if budget is not None:
        header["parameters"]["budget"] = budget
    spec: dict[str, Any] = {"name": "IMAGE", "datatype": "UINT8", "shape": list(images.shape)}
    if not binary:
        spec["data"] = images.ravel().tolist()
        header["inputs"] = [spec]
        return json.dumps(header).encode(), {}
    spec["parameters"] = {"binary_data_size": images.nbytes}
    header["inputs"] = [spec]
    text = json.dumps(header).encode()
    return text + images.tobytes(), {"Inference-Header-Content-Length": str(len(text))}


def decode(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    length = len(body) if header_length is None else int(header_length)
    offset = length
    arrays = {}
    for out in json.loads(body[:length])["outputs"]:
        dtype = DATATYPES[out["datatype"]]
        size = out.get("parameters", {}).get("binary_data_size")
        if size is None:
            data = np.asarray(out["data"], dtype)
        else:
            data = np.frombuffer(body[offset : offset + size], dtype)
            offset += size
        arrays[out["name"]] = data.reshape(out["shape"])
    return arrays


def client(served: Served, seed: int, sent: list[Sent], errors: list[str]) -> None:
    rng = np.random.default_rng(seed)
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)  # kept alive across requests
    try:
        for i in range(REQUESTS):
            images = random_images(rng, int(rng.integers(1, 4)), served.input_size)
            budget = None if i % 5 == 0 else round(float(rng.random()), 3)
            body, headers = encode(images, budget, binary=bool((seed + i) % 2))
            conn.request("POST", f"/v2/models/{served.name}/infer", body, headers)
            answer = conn.getresponse()
            content = answer.read()
            if answer.status != 200:
                errors.append(f"client {seed} request {i}: {answer.status} {content[:200]!r}")
                return
            outputs = decode(content, answer.getheader("Inference-Header-Content-Length"))
            sent.append(Sent(images, budget, outputs))
    except Exception as exc:  # reported below: a thread cannot fail the test itself
        errors.append(f"client {seed}: {type(exc).__name__}: {exc}")
    finally:
        conn.close()


def test_concurrent_clients_each_get_their_own_correct_answer(served: Served) -> None:
    sent: list[list[Sent]] = [[] for _ in range(CLIENTS)]
    errors: list[str] = []
    threads = [
        threading.Thread(target=client, args=(served, seed, sent[seed], errors))
        for seed in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "clients did not finish"
    assert errors == []
    assert sum(len(s) for s in sent) == CLIENTS * REQUESTS
    for requests in sent:
        for request in requests:
            budget = SERVER_BUDGET if request.budget is None else request.budget
            want = served.runtime.infer(request.images, budget=budget)
            got = request.outputs
            np.testing.assert_allclose(got["LOGITS"], want.logits, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(got["CLASS"], want.classes)
            np.testing.assert_array_equal(got["MASK"], want.mask.astype(bool))
            np.testing.assert_array_equal(got["FLOPS"], want.flops)
