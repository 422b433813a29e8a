"""Redeploying under a live server: every session made at load, so the artifact directory
may be deleted or exported again in place; a reload (SIGHUP) swaps a new artifact in,
requests in flight finishing on the model they began with; a failed reload keeps the
old model serving."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.budget import FixedBudget
from budget_edge.serve.app import create_app
from budget_edge.serve.model import ServedModel
from budget_edge.serve.reload import Reloader
from budget_edge.serve.server import make_server

from .conftest import (
    HANG_S,
    GatedRuntime,
    artifacts,
    image_input,
    infer_json,
    load_model,
    random_images,
    serving,
    wait_until,
)

HOT = [[1, 0, 1]]


def _write(path: Path, seed: int, kind: str = "resnet") -> Path:
    """A tiny artifact with a policy, the full graph, a hot mask and the switch graph:
    every kind of graph a request can need."""
    channels = 3 if kind == "resnet" else 1
    net = artifacts.make_net(kind, channels=channels, seed=seed)
    artifacts.write_artifact(net, path, hot=HOT if kind == "resnet" else None, switch=True)
    return path


def _load(path: Path) -> BudgetRuntime:
    return BudgetRuntime.load(path, backend="onnxruntime", threads=1)


# Requests that between them need every graph: each budget runs the policy and some
# blocks, and the masks run the full graph, the hot graph and the switch graph.
BUDGETS = [0.0, 0.5, 1.0]
MASKS = [[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]]


def _expected(runtime: BudgetRuntime, images: np.ndarray) -> list[np.ndarray]:
    want = [runtime.infer(images, budget=b).logits for b in BUDGETS]
    masks = [np.tile(np.asarray(m, np.uint8), (len(images), 1)) for m in MASKS]
    return want + [runtime.infer(images, mask=m).logits for m in masks]


def _served(url: str, name: str, images: np.ndarray) -> list[np.ndarray]:
    """The logits the server answers to the requests of `_expected`, each checked 200."""
    headers: list[dict[str, Any]] = [
        {"inputs": [image_input(images)], "parameters": {"budget": b}} for b in BUDGETS
    ]
    for m in MASKS:
        mask = {
            "name": "MASK",
            "datatype": "BOOL",
            "shape": [len(images), 3],
            "data": [bool(v) for v in m] * len(images),
        }
        headers.append({"inputs": [image_input(images), mask]})
    logits = []
    for header in headers:
        answer = infer_json(url, name, {**header, "outputs": [{"name": "LOGITS"}]})
        assert answer.status == 200, answer.body
        out = answer.json()["outputs"][0]
        logits.append(np.asarray(out["data"], np.float32).reshape(out["shape"]))
    return logits


def _same(got: list[np.ndarray], want: list[np.ndarray]) -> bool:
    return all(np.allclose(g, w, rtol=1e-5, atol=1e-6) for g, w in zip(got, want, strict=True))


def test_every_graph_the_runtime_may_run_gets_its_session_at_load(tmp_path: Path) -> None:
    runtime = _load(_write(tmp_path / "a", seed=0))
    assert set(runtime.graph_names()) == {g.name for g in runtime.manifest.graphs}
    runtime.close()


def test_the_served_model_answers_after_its_directory_is_deleted_or_replaced(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """Sessions were made on first use: after a redeploy deleted or re-exported the
    directory, the first request needing an unused graph answered 500."""
    path = _write(tmp_path / "artifact", seed=0)
    images = random_images(rng, 2, (3, 8, 8))
    with _load(path) as reference:
        want = _expected(reference, images)
    model = load_model(path)  # no request has run on it: nothing made on first use
    with serving(model) as url:
        shutil.rmtree(path)
        after_delete = _served(url, model.name, images)
        _write(path, seed=7)  # exported again in place, other weights
        after_replace = _served(url, model.name, images)
    model.runtime.close()
    assert _same(after_delete, want)
    assert _same(after_replace, want)  # still the model it loaded
    with _load(path) as replaced:
        assert not _same(_expected(replaced, images), want)  # the new bytes differ


@pytest.fixture
def deployed(tmp_path: Path) -> dict[str, Path]:
    """Two artifacts of one interface (other weights) and `current`, a symlink to r1."""
    paths = {
        "r1": _write(tmp_path / "r1", seed=0),
        "r2": _write(tmp_path / "r2", seed=7),
        "current": tmp_path / "current",
    }
    paths["current"].symlink_to("r1")
    return paths


def _switch(link: Path, target: str) -> None:
    """Point `link` at `target` atomically (a new link renamed over the old one)."""
    fresh = link.with_name(link.name + ".new")
    fresh.symlink_to(target)
    os.replace(fresh, link)


def _closes(runtime: Any) -> list[bool]:
    """A list that gets an entry when `runtime` is closed."""
    closed: list[bool] = []
    close = runtime.close

    def spy() -> None:
        closed.append(True)
        close()

    runtime.close = spy
    return closed


def test_a_reload_serves_the_artifact_the_symlink_now_points_at(
    deployed: dict[str, Path], rng: np.random.Generator
) -> None:
    images = random_images(rng, 2, (3, 8, 8))
    with _load(deployed["r1"]) as r1, _load(deployed["r2"]) as r2:
        want1, want2 = _expected(r1, images), _expected(r2, images)
    model = load_model(deployed["current"])
    first = model.runtime
    closed = _closes(first)
    reloader = Reloader(model, lambda: _load(deployed["current"]))
    with serving(model) as url:
        assert _same(_served(url, model.name, images), want1)
        _switch(deployed["current"], "r2")
        assert reloader.reload()
        assert _same(_served(url, model.name, images), want2)
    assert closed == [True]  # the replaced runtime, once nothing ran on it
    model.runtime.close()


def test_a_request_in_flight_finishes_on_the_model_it_began_with(
    deployed: dict[str, Path], rng: np.random.Generator
) -> None:
    """A 40-image request runs as chunks of 16, 16 and 8: a reload while its first
    chunk runs must not give its other chunks another model."""
    images = random_images(rng, 40, (3, 8, 8))
    with _load(deployed["r1"]) as r1, _load(deployed["r2"]) as r2:
        want1 = r1.infer(images, budget=0.5).logits
        want2 = r2.infer(images[:1], budget=0.5).logits
    gated = GatedRuntime(_load(deployed["r1"]))
    closed = _closes(gated)
    model = ServedModel(gated, FixedBudget(0.5))  # type: ignore[arg-type]
    reloader = Reloader(model, lambda: _load(deployed["r2"]))
    with serving(model) as url:
        answers: list[Any] = []
        header = {
            "inputs": [image_input(images)],
            "parameters": {"budget": 0.5},
            "outputs": [{"name": "LOGITS"}],
        }
        thread = threading.Thread(
            target=lambda: answers.append(infer_json(url, model.name, header))
        )
        thread.start()
        wait_until(lambda: len(gated.calls) == 1, "the first chunk runs")
        assert reloader.reload()
        assert closed == []  # a request still runs on it
        gated.open()
        thread.join(timeout=HANG_S)
        later = infer_json(url, model.name, {**header, "inputs": [image_input(images[:1])]})
    out = answers[0].json()["outputs"][0]
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), want1, rtol=1e-5, atol=1e-6)
    assert gated.calls == [16, 16, 8]  # every chunk ran on the model it began with
    assert closed == [True]  # closed once its last request was done
    out = later.json()["outputs"][0]
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), want2, rtol=1e-5, atol=1e-6)
    model.runtime.close()


@pytest.mark.parametrize("breakage", ["deleted", "other interface", "corrupt"])
def test_a_reload_that_fails_keeps_the_old_model_serving(
    deployed: dict[str, Path], rng: np.random.Generator, tmp_path: Path, breakage: str
) -> None:
    images = random_images(rng, 2, (3, 8, 8))
    with _load(deployed["r1"]) as r1:
        want1 = _expected(r1, images)
    model = load_model(deployed["current"])
    first = model.runtime
    closed = _closes(first)
    reloader = Reloader(model, lambda: _load(deployed["current"]))
    if breakage == "deleted":
        shutil.rmtree(deployed["r2"])
    elif breakage == "other interface":  # one channel, other blocks: not the same model
        shutil.rmtree(deployed["r2"])
        _write(deployed["r2"], seed=1, kind="resnext")
    else:
        (deployed["r2"] / "stem.onnx").write_bytes(b"not a graph")
    with serving(model) as url:
        _switch(deployed["current"], "r2")
        assert not reloader.reload()
        assert _same(_served(url, model.name, images), want1)
    assert model.runtime is first
    assert closed == []
    first.close()


def test_reload_requests_during_a_reload_make_one_more_after_it(tmp_path: Path) -> None:
    """Two SIGHUPs during one reload: the symlink may have moved again, so one more
    reload follows; never two at once."""
    started, release = threading.Event(), threading.Event()
    loads: list[int] = []

    def slow_load() -> BudgetRuntime:
        loads.append(1)
        started.set()
        assert release.wait(HANG_S)
        raise OSError("stands for a load that fails")  # logged, keeps serving

    model = load_model(_write(tmp_path / "a", seed=0))
    reloader = Reloader(model, slow_load)
    reloader.request()
    assert started.wait(HANG_S)
    reloader.request()
    reloader.request()
    release.set()
    wait_until(lambda: len(loads) == 2 and not reloader._running, "the second reload ended")
    assert len(loads) == 2
    model.runtime.close()


def test_sighup_calls_the_reload_and_other_signals_are_ignored(tmp_path: Path) -> None:
    """How the server routes signals (the real ones reach a process in test_command.py)."""
    model = load_model(_write(tmp_path / "a", seed=0))
    calls: list[str] = []
    server = make_server(create_app(model, 1 << 20), on_sighup=lambda: calls.append("reload"))
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        server._signalled(sig)  # type: ignore[attr-defined]
    assert calls == ["reload"]
    quiet = make_server(create_app(model, 1 << 20))
    quiet._signalled(signal.SIGHUP)  # type: ignore[attr-defined]  # no reload: ignored
    model.runtime.close()
