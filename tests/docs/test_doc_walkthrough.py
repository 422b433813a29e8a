"""The device-side command chains of docs/jetson.md, docs/quantize.md and docs/security.md
run, in the docs' order, through the CLI, on a small trained BudgetNet (issue 23); so do
the training chain of docs/pretrain.md and docs/budgetnet.md (pretrain, train, evaluate)
and docs/checkpoints.md's first block (the real akamaster ResNet-20 exported, trained on
a generated CIFAR-10 archive and evaluated), read from the docs themselves.

test_docs.py parses every documented `budget-edge` line and runs its check_options; here
the lines below actually run, as a user would type them, with only these changes:

- documented paths (runs/.../budgetnet.pt, artifacts/..., key.pem, data/fashion-mnist,
  bench JSON files) become tmp paths;
- `serve` gets `--port` of a free loopback port (the documented default, 8000, may be
  taken) and runs in a subprocess, answers one request and is stopped with SIGTERM;
- where a command would go through a whole dataset, the smallest option that limits it
  is added, each with a comment saying why.

README.md's serve walk-through and docs/protocol.md's reload chain run as shell blocks
(bash, curl, pgrep), each server in the background as the docs start it; so does
protocol.md's plain `serve` line.

Everything else in the docs' blocks (the TensorRT engines, `bench --backend tensorrt`
with its data, `serve --backend tensorrt`, `--uds`, `--token-file`, `latency:` budgets)
stays parse-only in test_docs.py: this machine has no TensorRT, and the serving options
have their own process tests in tests/serve.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from budgetnet_helpers import FMNIST_META, write_tiny_fashion_mnist
from commands.test_bench import _fail  # run through cli.main: one line, exit 2
from runtime.test_signing import _keys  # an Ed25519 key pair, as `openssl genpkey` makes
from train.test_budgetnet import tiny_config

from budget_edge.cli import main
from budget_edge.commands.demo import _free_port, _post_json, _stop, _wait_ready
from budget_edge.export import exporter
from budget_edge.export.onnx_export import GraphExporter
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.manifest import verify_files
from budget_edge.train.budgetnet import train_budgetnet

FMNIST = Path("/usr/share/datasets/fashion-mnist")
# The outputs docs/protocol.md documents for a request that names none and sends no MASK.
OUTPUTS = {"LOGITS", "CLASS", "MASK", "PROBS", "FLOPS"}
# `export --fuse-top --calib-data` and `quantize int8 --calib-data` would otherwise draw
# their default thousands of Fashion-MNIST training images through the model.
FEW_CALIB = ["--calib-images", "16"]
# `bench --data fashion-mnist` would otherwise run all 10,000 test images per row and
# time its default number of calls.
FEW_BENCH = ["--eval-images", "16", "--iterations", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/.../budgetnet.pt: a `budget-edge train` output, made by the tiny run of
    tests/train/test_budgetnet.py (its tiny_config and generated Fashion-MNIST-format
    data, light extractor) cut to one epoch, on a ResNet-8 for 1x28x28 images: ResNet-20
    trained three times longer here for nothing the commands below look at."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed in {FMNIST}")
    root = tmp_path_factory.mktemp("walkthrough-run")
    data = write_tiny_fashion_mnist(root / "data", n_train=32, n_test=16)
    torch.manual_seed(0)
    net = build_backbone("resnet8", num_classes=10, in_channels=1, input_size=(1, 28, 28))
    backbone = save_checkpoint(root / "backbone.pt", net, meta=dict(FMNIST_META))
    config = tiny_config(data, curriculum_epochs=1, finetune_epochs=0, eval_budgets=(0.5,))
    return train_budgetnet(root / "r8-budgetnet", backbone, config)


@pytest.fixture(scope="module")
def traces() -> GraphExporter:
    """One GraphExporter for every `export` below, as tests/export/conftest.py shares
    one: each structure is traced by torch once (about 3 s a graph here) and later
    exports of the same checkpoint fill the same graphs with its weights."""
    return GraphExporter()


@pytest.fixture(autouse=True)
def shared_traces(traces: GraphExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    export = exporter.export_checkpoint
    monkeypatch.setattr(
        exporter, "export_checkpoint", lambda *a, **k: export(*a, exporter=traces, **k)
    )


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """A documented line through cli.main; exit 0 (a SystemExit fails the test); stdout."""
    main(args)
    return capsys.readouterr().out


def serve_answers(args: list[str], tmp_path: Path, precision: str = "fp32") -> dict[str, object]:
    """`budget-edge serve ARGS --port P` in the background: ready, one Fashion-MNIST test
    image answered (checked against the runtime), stopped by SIGTERM with exit 0."""
    from budget_edge.data.registry import load_arrays

    artifact = Path(args[0])
    image = load_arrays("fashion-mnist", str(FMNIST), "test").images[:1]
    # --port: a free loopback port, not the default 8000 that something may hold.
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / f"serve-{port}.log"
    command = [sys.executable, "-m", "budget_edge.cli", "serve", *args, "--port", str(port)]
    with open(log, "w") as handle:
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    try:
        _wait_ready(server, base, log)
        with BudgetRuntime.load(artifact, backend="onnxruntime", precision=precision) as rt:
            name = rt.manifest.backbone
            want = rt.infer(image, budget=0.5)
        request = {
            "parameters": {"budget": 0.5},
            "inputs": [
                {
                    "name": "IMAGE",
                    "datatype": "UINT8",
                    "shape": list(image.shape),
                    "data": image.ravel().tolist(),
                }
            ],
        }
        answer = _post_json(f"{base}/v2/models/{name}/infer", request)
    finally:
        _stop(server)
    assert server.returncode == 0, log.read_text()
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    assert set(outputs) == OUTPUTS
    assert outputs["CLASS"] == want.classes.tolist()
    np.testing.assert_allclose(np.reshape(outputs["LOGITS"], (1, -1)), want.logits, atol=1e-4)
    return outputs


@pytest.mark.slow
def test_jetson_md_workstation_then_device(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = str(tmp_path / "artifacts" / "fmnist-r20")
    ckpt = str(checkpoint)
    # 2. Export on the workstation: both export lines (the second replaces the first).
    out = run(["export", ckpt, "--out", art], capsys)
    assert verify_files(art).roles["policy"] is not None
    # An agent and no allocator: export says how to get the allocator.
    assert "note: no allocator in this checkpoint" in out
    assert f"`budget-edge allocate {ckpt} --out CKPT2`" in out
    run(
        [
            "export",
            ckpt,
            "--out",
            art,
            "--fuse-top",
            "4",
            "--calib-data",
            "fashion-mnist",
            *FEW_CALIB,
        ],
        capsys,
    )
    assert verify_files(art).hot_policies
    run(["quantize", art, "--precision", "fp16"], capsys)
    run(
        [
            "quantize",
            art,
            "--precision",
            "int8",
            "--target",
            "tensorrt",
            "--calib-data",
            "fashion-mnist",
            *FEW_CALIB,
        ],
        capsys,
    )
    assert set(verify_files(art).precisions) >= {"fp16", "int8"}
    # Sign last, serve only what the key signed.
    key, pub = _keys(tmp_path, "key")
    run(["sign", art, "--key", str(key)], capsys)
    serve_answers([art, "--trusted-key", str(pub)], tmp_path)
    # 3. Build the TensorRT engines: without TensorRT, one line naming it, exit 2.
    for precision in ("fp16", "int8"):
        err = _fail(
            [
                "build-engines",
                art,
                "--precision",
                precision,
                "--max-batch",
                "8",
                "--workspace",
                "1024",
            ],
            capsys,
        )
        assert err.startswith("error: ")
        assert "pip install tensorrt" in err, err
    # 4. Measure: ONNX Runtime on the test set; TensorRT refused in one line.
    report = tmp_path / "bench-ort.json"
    run(
        [
            "bench",
            art,
            "--backend",
            "onnxruntime",
            "--data",
            "fashion-mnist",
            "--data-dir",
            str(FMNIST),
            "--json",
            str(report),
            *FEW_BENCH,
        ],
        capsys,
    )
    rows = json.loads(report.read_text())["rows"]
    assert {r["kind"] for r in rows} >= {"static", "policy", "budget"}
    assert all(r["accuracy"] is not None for r in rows if r["kind"] != "policy")
    for line in (
        [
            "--backend",
            "tensorrt",
            "--data",
            "fashion-mnist",
            "--data-dir",
            str(FMNIST),
            "--budgets",
            "0.25,0.5,0.75,1.0",
            "--batch",
            "1,8",
            "--json",
            str(tmp_path / "bench.json"),
            "--md",
            str(tmp_path / "bench.md"),
        ],
        ["--backend", "tensorrt", "--batch", "1", "--json", str(tmp_path / "bench-b1.json")],
    ):
        err = _fail(["bench", art, *line], capsys)
        assert err.startswith("error: this artifact has no TensorRT engines: run "), err
        assert "budget-edge build-engines" in err


@pytest.mark.slow
def test_quantize_md_chain(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = str(tmp_path / "artifacts" / "r20")
    # --static-search-images: the search would otherwise run thousands of training images
    # under every candidate mask.
    run(
        [
            "export",
            str(checkpoint),
            "--out",
            art,
            "--static-masks",
            "fashion-mnist",
            "--static-search-images",
            "16",
        ],
        capsys,
    )
    run(
        ["quantize", art, "--precision", "int8", "--calib-data", "fashion-mnist", *FEW_CALIB],
        capsys,
    )
    run(["quantize", art, "--precision", "fp16"], capsys)
    assert set(verify_files(art).precisions) >= {"fp16", "int8"}
    out = run(
        [
            "bench",
            art,
            "--data",
            "fashion-mnist",
            "--precision",
            "fp32,fp16,int8",
            "--batch",
            "1,8",
            *FEW_BENCH,
        ],
        capsys,
    )
    for precision in ("", "fp16 ", "int8 "):  # a row per graph set and batch size
        for batch in (1, 8):
            assert re.search(rf"^\s*{precision}c=0\.5\s+{batch}\s", out, re.M), out
    serve_answers([art, "--precision", "int8", "--budget", "fixed:0.5"], tmp_path, "int8")


@pytest.mark.slow
def test_security_md_signed_export_and_serve(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = _keys(tmp_path, "key")
    art = str(tmp_path / "artifacts" / "r20")
    run(["export", str(checkpoint), "--out", art, "--sign", str(key)], capsys)
    serve_answers([art, "--trusted-key", str(pub)], tmp_path)
    # The same line's Python alternative, `BudgetRuntime.load(..., trusted_keys=[...])`.
    with BudgetRuntime.load(art, backend="onnxruntime", trusted_keys=[pub]) as rt:
        assert rt.infer(np.zeros((1, 28, 28, 1), np.uint8), budget=0.5).classes.shape == (1,)


@pytest.mark.slow
def test_protocol_md_serve_line_answers(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/protocol.md's first `serve` line, on the walk-through checkpoint's export."""
    serve = in_tmp(documented("protocol.md", "serve"), tmp_path)
    run(["export", str(checkpoint), "--out", serve[1]], capsys)
    serve_answers(serve[1:], tmp_path)  # its --port 8000 overridden by a free port


def documented(doc: str, subcommand: str) -> list[str]:
    """The first fenced `budget-edge SUBCOMMAND ...` line of docs/DOC, as the words after
    `budget-edge`, so that the test runs what the doc says today."""
    from .test_docs import fenced_commands, shell_commands

    text = (Path(__file__).resolve().parents[2] / "docs" / doc).read_text()
    for line in fenced_commands(text):
        for _, words in shell_commands(line):
            if words[:2] == ["budget-edge", subcommand]:
                return words[1:]
    raise AssertionError(f"docs/{doc} has no `budget-edge {subcommand}` line")


def in_tmp(words: list[str], tmp_path: Path, moved: dict[str, Path] | None = None) -> list[str]:
    """The docs' runs/... and artifacts/... paths under tmp_path; `moved`: other paths
    the test puts elsewhere (a downloaded checkpoint, a dataset archive)."""
    moved = moved or {}
    local = [
        str(moved[word])
        if word in moved
        else str(tmp_path / word)
        if word.startswith(("runs/", "artifacts/"))
        else word
        for word in words
    ]
    # A doc spelling this misses (`--out=runs/x`, `./runs/x`) must not write into the repo.
    stray = [w for w in local if ("runs/" in w or "artifacts/" in w) and str(tmp_path) not in w]
    assert not stray, f"paths the test would not move: {stray}"
    return local


@pytest.mark.slow
def test_pretrain_md_then_budgetnet_md_train_and_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed in {FMNIST}")
    pretrain = in_tmp(documented("pretrain.md", "pretrain"), tmp_path)
    # The documented run takes every training image through 15 epochs: one epoch of 64,
    # with 32 held out for validation and 32 test images for its report.
    few = ["--epochs", "1", "--limit-train", "64", "--val-size", "32", "--eval-images", "32"]
    assert "final test accuracy" in run([*pretrain, *few], capsys)

    train = in_tmp(documented("budgetnet.md", "train"), tmp_path)
    assert train[train.index("--checkpoint") + 1] == str(tmp_path / "runs/r20/best.pt")
    # The paper preset's 20 + 40 epochs over the training set: one of each stage on 64
    # images, its check and its starting policy on 16 validation images.
    few = ["--limit-train", "64", "--curriculum-epochs", "1", "--finetune-epochs", "1"]
    few += ["--eval-images", "16", "--prior-images", "16"]
    assert "epoch 2 finetune" in run([*train, *few], capsys)

    evaluate = in_tmp(documented("budgetnet.md", "evaluate"), tmp_path)
    # All 10,000 test images and a static-mask search on 5,000: 16 of each, no timing.
    run([*evaluate, "--eval-images", "16", "--val-size", "16", "--latency-images", "0"], capsys)
    sweep = json.loads((tmp_path / "runs/r20-bn/eval/sweep.json").read_text())
    assert [round(row["budget"], 2) for row in sweep["rows"]] == [
        round(0.1 + 0.05 * i, 2) for i in range(19)
    ]


@pytest.mark.slow
def test_checkpoints_md_akamaster_export_train_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/checkpoints.md's first block on the real akamaster ResNet-20 and a generated
    archive in the official CIFAR-10 python format (tests/data/formats.py)."""
    from data.formats import cifar_files, write_cifar_tar

    from .test_docs import shared_dir

    weights = shared_dir() / "pretrained" / "akamaster-cifar10" / "resnet20-12fca82f.th"
    if not weights.is_file():
        pytest.skip(f"the akamaster weights are not at {weights}")
    archive = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", cifar_files("cifar10"))
    moved = {
        "checkpoints/resnet20-12fca82f.th": weights,
        "data/cifar-10-python.tar.gz": archive,
    }
    export = in_tmp(documented("checkpoints.md", "export"), tmp_path, moved)
    run(export, capsys)
    assert verify_files(tmp_path / "artifacts/akamaster-r20").backbone == "resnet20"

    train = in_tmp(documented("checkpoints.md", "train"), tmp_path, moved)
    # The archive holds 20 training and 6 test images; the paper preset's 20 + 40 epochs
    # become one of each stage.
    few = ["--curriculum-epochs", "1", "--finetune-epochs", "1", "--prior-images", "8"]
    assert "epoch 2 finetune" in run([*train, *few], capsys)

    evaluate = in_tmp(documented("checkpoints.md", "evaluate"), tmp_path, moved)
    run([*evaluate, "--val-size", "8", "--latency-images", "0"], capsys)
    sweep = json.loads((tmp_path / "runs/akamaster-r20/eval/sweep.json").read_text())
    assert len(sweep["rows"]) == 19  # the default budgets, 0.1:1.0:0.05


# ---- shell blocks that start a server: README.md's walk-through, protocol.md's reload ----


def sh_block(doc: str, needle: str) -> list[str]:
    """The lines of the first fenced sh block of DOC (README.md, docs/...) holding `needle`."""
    from .test_docs import ROOT, fenced_blocks, shell_lines

    for lang, code in fenced_blocks((ROOT / doc).read_text()):
        if lang == "sh" and needle in code:
            return shell_lines(code.strip())
    raise AssertionError(f"{doc} has no sh block with {needle!r}")


def needs(*tools: str) -> None:
    """Skip where the machine lacks a tool the block calls (a bare container, say)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


def on_port(lines: list[str], port: int) -> list[str]:
    """The documented port 8000, which something here may hold, as a free one."""
    moved = [
        line.replace("--port 8000", f"--port {port}").replace("localhost:8000", f"localhost:{port}")
        for line in lines
    ]
    assert moved != lines, "the block no longer names port 8000: update this test"
    return moved


def start_bash(
    lines: list[str], script: Path, log: Path, errors: Path | None = None
) -> subprocess.Popen[bytes]:
    """LINES as the bash SCRIPT, run in its folder, its output appended to LOG (its
    errors too, or to ERRORS: curl -sS reports each failed try), with
    `budget-edge` on PATH. The script ends with `wait`, and on SIGTERM passes it on to
    the server it started in the background and waits for it, so that `stop_bash` ends
    both. (A script file, not `bash -c TEXT`: the docs' `pgrep -f` would find the text
    in bash's own command line.)"""
    forward = "trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' TERM"
    script.write_text("\n".join([forward, *lines, "wait", ""]))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with open(log, "ab") as output, open(errors or os.devnull, "ab") as error_output:
        return subprocess.Popen(
            ["bash", str(script)],
            cwd=script.parent,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT if errors is None else error_output,
            start_new_session=True,  # its own process group, which stop_bash can kill
        )


def stop_bash(shell: subprocess.Popen[bytes]) -> None:
    """SIGTERM to bash, which stops its server cleanly and waits for it; whatever of the
    script's process group is left after 30 s (a curl still retrying) is killed."""
    with contextlib.suppress(ProcessLookupError):
        shell.terminate()
    try:
        shell.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(shell.pid, signal.SIGKILL)
    shell.wait()


def wait_for(log: Path, text: str, shell: subprocess.Popen[bytes], timeout: float = 120) -> str:
    """The log once it holds `text`; fails if the script ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        assert shell.poll() is None, f"the script ended before {text!r}:\n{content[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def json_answers(text: str) -> list[dict[str, Any]]:
    """The JSON objects that curl printed one after another (with no newline)."""
    decoder, answers, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        answer, at = decoder.raw_decode(text, at)
        answers.append(answer)
    return answers


def wait_for_answers(
    log: Path, count: int, shell: subprocess.Popen[bytes], timeout: float = 120
) -> list[dict[str, Any]]:
    """The first COUNT JSON answers in the log, once curl has printed them whole."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(json.JSONDecodeError):  # an answer still arriving
            answers = json_answers(log.read_text())
            if len(answers) >= count:
                return answers[:count]
        assert shell.poll() is None, f"the script ended first:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"not {count} answers after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_readme_serve_walkthrough(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README.md's "From a fresh clone to a served model", pasted as one block: serve in
    the background, curl waits while it loads, one request answered."""
    needs("bash", "curl")
    lines = sh_block("README.md", "budget-edge serve")
    # `make demo` has its own test (tests/commands/test_demo.py); its artifact here is
    # the walk-through checkpoint's, a ResNet-8 where the demo's is a ResNet-20.
    assert lines[0].startswith("make demo")
    run(["export", str(checkpoint), "--out", str(tmp_path / "runs/demo/artifact")], capsys)
    name = verify_files(tmp_path / "runs/demo/artifact").backbone
    # .venv/bin/budget-edge, as a fresh clone has it after `make setup`.
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    block = [
        line.replace("/models/resnet20/", f"/models/{name}/")
        # The request file in this test's folder, not the machine's /tmp.
        .replace("/tmp/request.json", str(tmp_path / "request.json"))
        for line in on_port(lines[1:], _free_port())
    ]
    # The server's log apart from the curl answers, which the test reads.
    block = [
        line.replace(" &", " > serve.log 2>&1 &") if "budget-edge serve" in line else line
        for line in block
    ]
    errors = tmp_path / "readme.errors"
    shell = start_bash(block, tmp_path / "readme.sh", tmp_path / "readme.log", errors)
    try:
        ready, answer = wait_for_answers(tmp_path / "readme.log", 2, shell)
    except AssertionError as failed:
        logs = [f"{p.name}:\n{p.read_text()[-2000:]}" for p in (errors, tmp_path / "serve.log")]
        raise AssertionError("\n".join([str(failed), *logs])) from None
    finally:
        stop_bash(shell)
    assert ready == {"name": name, "ready": True}
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    assert set(outputs) == OUTPUTS
    with BudgetRuntime.load(tmp_path / "runs/demo/artifact", backend="onnxruntime") as rt:
        want = rt.infer(np.zeros((1, 28, 28, 1), np.uint8), budget=0.5)  # --budget fixed:0.5
    assert outputs["CLASS"] == want.classes.tolist()


@pytest.mark.slow
def test_protocol_md_reload_chain_swaps_the_model(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/protocol.md's redeploy block as written, in one folder: its exports in this
    process (the shared traces: each in a process of its own would trace every graph
    again), every other line in bash (ln, serve in the background, the wait, mv -T,
    kill -HUP $(pgrep ...)); the server then says it serves v2, and answers as v2 does
    after v1 is deleted."""
    needs("bash", "curl", "pgrep")
    port = _free_port()
    lines = on_port(sh_block("docs/protocol.md", "kill -HUP"), port)
    # runs/v1/budgetnet.pt, and runs/v2/budgetnet.pt with other logits (its classifier's
    # bias moved), so that an answer tells the two apart.
    for version in ("v1", "v2"):
        (tmp_path / "runs" / version).mkdir(parents=True)
    shutil.copy(checkpoint, tmp_path / "runs" / "v1" / "budgetnet.pt")
    v2 = load_checkpoint(checkpoint)
    with torch.no_grad():
        [m for m in v2.backbone.modules() if isinstance(m, torch.nn.Linear)][-1].bias += 1.0
    save_checkpoint(tmp_path / "runs" / "v2" / "budgetnet.pt", v2.backbone, v2.agent, meta=v2.meta)
    exports = [i for i, line in enumerate(lines) if line.startswith("budget-edge export")]
    assert len(exports) == 2, lines
    assert exports[0] == 0, lines
    log = tmp_path / "reload.log"
    shells = []
    try:
        for start, end in ((0, exports[1]), (exports[1], len(lines))):
            words = in_tmp(shlex.split(lines[start])[1:], tmp_path)
            run(words, capsys)
            script = tmp_path / f"reload-{len(shells)}.sh"
            shells.append(start_bash(lines[start + 1 : end], script, log))
            if len(shells) == 1:  # served, and curl has seen it ready
                wait_for(log, '"ready":true', shells[0])
        served = (tmp_path / "artifacts" / "r20-v2").resolve()
        wait_for(log, f"reloaded: now serving {served}", shells[0])
        image = np.zeros((1, 28, 28, 1), np.uint8)
        with BudgetRuntime.load(tmp_path / "artifacts" / "r20-v1", backend="onnxruntime") as rt:
            before = rt.infer(image, budget=0.5).logits
        shutil.rmtree(tmp_path / "artifacts" / "r20-v1")  # "then v1 may be deleted"
        with BudgetRuntime.load(served, backend="onnxruntime") as rt:
            name, want = rt.manifest.backbone, rt.infer(image, budget=0.5)
        request = {
            "parameters": {"budget": 0.5},
            "inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": [1, 28, 28, 1]}],
        }
        request["inputs"][0]["data"] = image.ravel().tolist()  # type: ignore[index]
        answer = _post_json(f"http://127.0.0.1:{port}/v2/models/{name}/infer", request)
    finally:
        for shell in shells:
            stop_bash(shell)
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    assert outputs["CLASS"] == want.classes.tolist()
    np.testing.assert_allclose(np.reshape(outputs["LOGITS"], (1, -1)), want.logits, atol=1e-4)
    assert not np.allclose(want.logits, before, atol=1e-2)  # v2's answer is not v1's
