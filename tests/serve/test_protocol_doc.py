"""docs/protocol.md runs: each bash and python block against a live server, answers compared.

The server serves a model shaped like the doc's Fashion-MNIST ResNet-20 (1x28x28
pixels, 9 components, 10 classes) under the doc's name, so requests and
answers agree in every shape; only the numbers differ (random weights).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budget_edge.runtime.budget import FixedBudget

from .conftest import artifacts, load_model, serving

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
DOC_ADDRESS = "localhost:8000"
DOC_MODEL = "resnet20"
DOC_BUDGET = 0.5  # the doc starts the server with --budget fixed:0.5
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)

# What the tests put on PATH when curl is missing: the few curl options the doc uses.
CURL_SHIM = """
import sys, urllib.error, urllib.request
args, headers, body, url = sys.argv[1:], {}, None, None
while args:
    arg = args.pop(0)
    if arg == "-s":
        continue
    if arg == "-H":
        key, value = args.pop(0).split(":", 1)
        headers[key.strip()] = value.strip()
    elif arg in ("-d", "--data-binary"):
        value = args.pop(0)
        body = open(value[1:], "rb").read() if value.startswith("@") else value.encode()
        if arg == "-d":
            body = body.replace(b"\\n", b"")
    else:
        url = arg if "://" in arg else "http://" + arg
request = urllib.request.Request(url, data=body, headers=headers)
try:
    answer = urllib.request.urlopen(request, timeout=30)
except urllib.error.HTTPError as error:
    answer = error
sys.stdout.buffer.write(answer.read())
"""


def doc_blocks() -> list[tuple[str, str, str | None]]:
    """(language, code, the json block right after it or None) for bash and python blocks."""
    blocks = [(m.group(1), m.group(2)) for m in BLOCK.finditer(DOC.read_text())]
    out = []
    for i, (language, code) in enumerate(blocks):
        if language in ("bash", "python"):
            follows = blocks[i + 1] if i + 1 < len(blocks) else None
            answer = follows[1] if follows and follows[0] == "json" else None
            out.append((language, code, answer))
    return out


def doc_shaped_artifact(path: Path) -> None:
    """The runtime tests' tiny network stretched to the doc model's shape."""
    net = artifacts.make_net("resnet", channels=1, seed=3)
    first, down, last = net.blocks
    # ResNet-20 has 9 blocks; the tiny one's three kinds, repeated, give the same mask length.
    net.blocks = [copy.deepcopy(b) for b in [first] * 3 + [down] + [last] * 5]
    net.input_size = (1, 28, 28)
    size = (28, 28)
    for block in net.blocks:
        block.in_hw = size
        size = block.out_hw
    rng = np.random.default_rng(3)
    net.num_classes = 10
    net.head = {
        "w": (rng.standard_normal((10, last.cout)) * 0.3).astype(np.float32),
        "b": (rng.standard_normal(10) * 0.3).astype(np.float32),
    }
    net.policy = {
        "w": (rng.standard_normal((9, 2)) * 4).astype(np.float32),
        "b": (rng.standard_normal(9) * 0.5).astype(np.float32),
        "wv": (rng.standard_normal((1, 2)) * 0.3).astype(np.float32),
        "bv": (rng.standard_normal(1) * 0.3).astype(np.float32),
    }
    artifacts.write_artifact(net, path)


@pytest.fixture(scope="module")
def doc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("doc-model")
    doc_shaped_artifact(path)
    model = load_model(path, controller=FixedBudget(DOC_BUDGET), name=DOC_MODEL)
    with serving(model) as url:
        yield url.removeprefix("http://")
    model.runtime.close()


def shell_env(folder: Path) -> dict[str, str]:
    """The environment the blocks run in: a curl on PATH, the real one or the shim."""
    env = dict(os.environ)
    if shutil.which("curl") is None:
        shim = folder / "bin" / "curl"
        shim.parent.mkdir()
        shim.write_text(f"#!{sys.executable}\n{CURL_SHIM}")
        shim.chmod(0o755)
        env["PATH"] = f"{shim.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def same_form(doc: Any, got: Any, where: str = "answer") -> None:
    """The answer has the doc's form: keys, names, strings, shapes; numbers may differ."""
    if isinstance(doc, dict):
        assert isinstance(got, dict), f"{where}: {got}"
        assert set(got) == set(doc), f"{where}: {got}"
        for key in doc:
            if key == "version":  # the server's version moves with releases
                continue
            if key == "shape":
                assert got[key] == doc[key], f"{where}.shape: {got[key]} != {doc[key]}"
                continue
            if key == "data":
                assert len(got[key]) == len(doc[key]), f"{where}.data: {got[key]}"
                assert {type(v) for v in got[key]} <= {type(v) for v in doc[key]} | {float, int}
                continue
            same_form(doc[key], got[key], f"{where}.{key}")
    elif isinstance(doc, list):
        assert isinstance(got, list), f"{where}: {got}"
        assert len(got) == len(doc), f"{where}: {got}"
        for i, (d, g) in enumerate(zip(doc, got, strict=True)):
            same_form(d, g, f"{where}[{i}]")
    elif isinstance(doc, bool) or isinstance(doc, str) or doc is None:
        assert got == doc, f"{where}: {got!r} != {doc!r}"
    else:
        assert isinstance(got, (int, float)), f"{where}: {got!r}"
        assert not isinstance(got, bool), f"{where}: {got!r}"


def test_doc_examples_run_and_answer_as_documented(doc_server: str, tmp_path: Path) -> None:
    blocks = doc_blocks()
    assert sum(language == "bash" for language, _, _ in blocks) >= 8
    assert any(language == "python" for language, _, _ in blocks)
    env = shell_env(tmp_path)
    # In doc order, in one folder: later blocks read the request files earlier ones wrote.
    for language, code, answer in blocks:
        first_line = code.splitlines()[0]
        code = code.replace(DOC_ADDRESS, doc_server)
        command = (
            ["bash", "-euo", "pipefail", "-c", code]
            if language == "bash"
            else [sys.executable, "-c", code]
        )
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, f"{first_line}\n{done.stderr.decode()}"
        if language == "bash":
            assert answer is not None, f"{first_line}: no json answer follows in the doc"
            try:
                got = json.loads(done.stdout)
            except json.JSONDecodeError as exc:
                raise AssertionError(f"{first_line}: answer {done.stdout[:300]!r}") from exc
            same_form(json.loads(answer), got, f"answer to {first_line!r}")
        else:
            assert done.stdout.strip(), f"{first_line}: the python example printed nothing"
