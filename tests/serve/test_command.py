"""`budget-edge serve` as a real process: start, answer, SIGTERM mid-request, exit 0; CLI errors."""

from __future__ import annotations

import http.client
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from budget_edge.cli import main
from budget_edge.runtime import BudgetRuntime

from .conftest import artifacts, image_input, read_head

STARTUP_S = 60  # the process imports numpy and onnxruntime and checks every file


class Process:
    """A `budget-edge serve` child whose stderr lines are collected by a thread."""

    def __init__(self, args: list[str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "budget_edge.cli", "serve", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = STARTUP_S) -> re.Match[str]:
        """The first stderr line (from now on) matching `pattern`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r}; stderr so far:\n" + "".join(self.seen))


@contextmanager
def serve_process(args: list[str]) -> Iterator[Process]:
    process = Process(args)
    try:
        yield process
    finally:
        if process.popen.poll() is None:
            process.popen.kill()
        process.popen.wait(timeout=30)


def test_sigterm_answers_the_request_in_flight_then_exits_0(tiny_artifact: Path) -> None:
    with serve_process(
        [str(tiny_artifact), "--port", "0", "--budget", "fixed:0.5", "--model-name", "tiny"]
    ) as process:
        url = process.wait_for(r"serving model 'tiny' .* on (http://\S+) with budget").group(1)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        images = np.random.default_rng(5).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
        body = json.dumps({"inputs": [image_input(images)]}).encode()
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            # With Expect: 100-continue the server says "100 Continue" once the handler
            # reads the body: from then on the request is surely in flight.
            sock.sendall(
                f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
            )
            assert read_head(sock).startswith(b"HTTP/1.1 100")
            sock.sendall(body[:100])
            process.popen.send_signal(signal.SIGTERM)
            process.wait_for("Shutting down", timeout=30)
            sock.sendall(body[100:])
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            assert answer.status == 200
            outputs = {o["name"]: o for o in json.loads(answer.read())["outputs"]}
        assert process.popen.wait(timeout=40) == 0
        with pytest.raises(OSError):  # it no longer listens
            socket.create_connection((host, int(port)), timeout=5).close()
    with BudgetRuntime.load(tiny_artifact, backend="onnxruntime", threads=1) as rt:
        want = rt.infer(images, budget=0.5)
    assert outputs["CLASS"]["data"] == want.classes.tolist()
    np.testing.assert_allclose(
        np.reshape(outputs["LOGITS"]["data"], (2, -1)), want.logits, rtol=1e-6, atol=1e-6
    )


def _loop_requests(host: str, port: int, stop: threading.Event, statuses: list[object]) -> None:
    """Send one-image requests back to back until `stop`; note every answer's status (or
    the error in its place)."""
    images = np.zeros((1, 8, 8, 3), np.uint8)
    body = json.dumps({"inputs": [image_input(images)], "parameters": {"budget": 0.5}})
    while not stop.is_set():
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request("POST", "/v2/models/tiny/infer", body=body)
            statuses.append(conn.getresponse().status)
        except (OSError, http.client.HTTPException) as exc:
            statuses.append(f"{type(exc).__name__}: {exc}")
            return  # the server is gone: one error says so
        finally:
            conn.close()


def test_sighup_reloads_under_load_and_sigusr_is_ignored(tmp_path: Path) -> None:
    """SIGHUP (a closed terminal) or SIGUSR1 under load killed the server at once, and
    every request in flight lost its answer. Now SIGHUP reloads the artifact its symlink
    points at, SIGUSR1/2 are ignored, and every request is answered."""
    r1, r2, current = tmp_path / "r1", tmp_path / "r2", tmp_path / "current"
    artifacts.write_artifact(artifacts.make_net("resnet", seed=0), r1)
    artifacts.write_artifact(artifacts.make_net("resnet", seed=7), r2)
    current.symlink_to("r1")
    with serve_process([str(current), "--port", "0", "--model-name", "tiny"]) as process:
        url = process.wait_for(r"serving model 'tiny' .* on (http://\S+) with budget").group(1)
        process.wait_for("SIGHUP reloads the artifact")  # the server handles them now
        host, port = url.removeprefix("http://").rsplit(":", 1)
        stop, statuses = threading.Event(), []  # type: ignore[var-annotated]
        clients = [
            threading.Thread(target=_loop_requests, args=(host, int(port), stop, statuses))
            for _ in range(6)
        ]
        for client in clients:
            client.start()
        try:
            process.popen.send_signal(signal.SIGUSR1)
            process.wait_for("SIGUSR1 ignored")
            fresh = tmp_path / "current.new"
            fresh.symlink_to("r2")
            fresh.replace(current)  # the atomic switch of a redeploy
            process.popen.send_signal(signal.SIGHUP)
            process.wait_for(rf"reloaded: now serving {re.escape(str(r2))}")
            process.popen.send_signal(signal.SIGUSR2)
            process.wait_for("SIGUSR2 ignored")
        finally:
            stop.set()
            for client in clients:
                client.join(timeout=60)
        assert process.popen.poll() is None  # still running
        images = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request(
            "POST",
            "/v2/models/tiny/infer",
            body=json.dumps({"inputs": [image_input(images)], "parameters": {"budget": 0.5}}),
        )
        outputs = {o["name"]: o for o in json.loads(conn.getresponse().read())["outputs"]}
        conn.close()
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=40) == 0
    assert statuses
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:3]
    with BudgetRuntime.load(r2, backend="onnxruntime", threads=1) as rt:
        want = rt.infer(images, budget=0.5)
    np.testing.assert_allclose(
        np.reshape(outputs["LOGITS"]["data"], (2, -1)), want.logits, rtol=1e-5, atol=1e-6
    )


def test_unix_socket_process_serves_and_cleans_up(tiny_artifact: Path, tmp_path: Path) -> None:
    path = tmp_path / "be.sock"
    with serve_process([str(tiny_artifact), "--uds", str(path)]) as process:
        process.wait_for(rf"on unix:{re.escape(str(path))} ")
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(30)
        client.connect(str(path))
        client.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = http.client.HTTPResponse(client)
        answer.begin()
        assert answer.status == 200
        assert json.loads(answer.read()) == {"ready": True}
        client.close()
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=40) == 0
    assert not path.exists()


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(["serve", *args])
    return int(info.value.code or 0), capsys.readouterr().err


def test_busy_port_exits_2_with_advice(
    tiny_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, err = run_cli([str(tiny_artifact), "--port", str(port)], capsys)
    assert code == 2
    assert f"error: cannot listen on 127.0.0.1:{port}" in err
    assert "--port" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "fixed:2"], "must be a number in [0, 1]"),
        (["--budget", "battery:/no/such/file"], "is not a file"),
    ],
)
def test_bad_budget_exits_2(
    tiny_artifact: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, err = run_cli([str(tiny_artifact), "--port", "0", *extra], capsys)
    assert code == 2
    assert message in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-body-mb", "nan"], "'nan' is not a finite number"),
        (["--max-body-mb", "inf"], "'inf' is not a finite number"),
        (["--max-body-mb", "1e-9"], "not in the range 0.01<=x<=1024"),
        (["--request-timeout", "nan"], "'nan' is not a finite number"),
        (["--request-timeout", "-inf"], "'-inf' is not a finite number"),
        (["--threads", "1000000"], "not in the range 1<=x<=1024"),
        (["--max-queue", str(2**70)], "not in the range 1<=x<=10000"),
        (["--max-batch", str(10**9)], "not in the range 1<=x<=4096"),
        (["--port", "-1"], "not in the range 0<=x<=65535"),
        (["--model-name", "a/b"], "model name 'a/b' cannot be part of a URL"),
        (["--model-name", "../../etc"], "cannot be part of a URL"),
        (["--model-name", ".."], "cannot be part of a URL"),
        (["--model-name", "x" * 65], "cannot be part of a URL"),
        (["--model-name", "tiny\n"], "cannot be part of a URL"),
        # rules between options (serve's check_options), also before loading
        (["--host", "0.0.0.0"], "serves other machines, and there is no access token"),
        (["--tls-key", "k.pem"], "TLS needs both --tls-cert and --tls-key"),
        (["--budget", "fixed:2"], "must be a number in [0, 1]"),
        (["--budget", "latency:-5:b.json"], "the deadline must be a positive number"),
        (["--budget", "watts:5"], "unknown kind 'watts'"),
    ],
)
def test_server_options_that_cannot_be_right_exit_2_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """Each was a traceback or a server that could not work; the artifact path does not
    exist, so a refusal that names the option came before any loading."""
    code, err = run_cli([str(tmp_path / "nothing"), "--port", "0", *extra], capsys)
    assert code == 2
    assert message in err
    assert "does not exist" not in err


def test_missing_artifact_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli([str(tmp_path / "nothing"), "--port", "0"], capsys)
    assert code == 2
    assert "does not exist" in err


TORCH_FREE = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from budget_edge.cli import main
try:
    main(["serve", sys.argv[1], "--port", "0", "--budget", "fixed:7"])
except SystemExit as exit:
    print("exit", exit.code)
print(sorted(k for k in sys.modules if k.split(".")[0] == "torch"))
print("budget_edge.serve.app" in sys.modules, "budget_edge.serve.model" in sys.modules)
"""


def test_serve_runs_without_torch(tiny_artifact: Path) -> None:
    # The bad budget stops the command after the runtime and server modules are loaded.
    done = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(tiny_artifact)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["exit 2", "['torch']", "True True"]
    assert "must be a number in [0, 1]" in done.stderr


def test_a_precision_the_artifact_lacks_exits_2(
    tiny_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli([str(tiny_artifact), "--port", "0", "--precision", "int8"], capsys)
    assert code == 2
    assert "no int8 graphs" in err
    assert "budget-edge quantize" in err
