"""Where the runtime's time and memory go: the experiments behind results/runtime-findings.md.

Torch-free; runs on the artifacts runtime_targets.py or bench_models.py exports (--work). Each
experiment prints CPU time per call (this process, one intra-op thread), which
a shared machine's load barely moves.

    python benchmarks/investigations/runtime_overhead.py chain resnet56    # section 2
    python benchmarks/investigations/runtime_overhead.py nchwc resnet56    # section 2, prototype
    python benchmarks/investigations/runtime_overhead.py memory resnext29  # section 4

Section 1's code-grouped dispatch and section 4's shared arena have since
landed in the runtime; `memory` now compares the runtime with its shared
arena turned off (`SHARED_ARENA = False`) and on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: runtime_rss
from runtime_rss import runtime_rss  # noqa: E402

WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "budget-edge-bench"
CAP = "components"


def cpu_ms(fn: Callable[[int], Any], count: int, repeats: int = 4) -> float:
    """Median CPU time of fn(i) over i in range(count), after one untimed pass."""
    for i in range(count):
        fn(i)
    times = []
    for _ in range(repeats):
        for i in range(count):
            t = time.process_time()
            fn(i)
            times.append((time.process_time() - t) * 1e3)
    return float(np.median(times))


def _on(fn: Callable[[np.ndarray], Any], x: np.ndarray) -> Callable[[int], Any]:
    """fn(x) as a function of the (ignored) call index, for cpu_ms."""
    return lambda _i: fn(x)


def _options(
    level: Any = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, dump: str | None = None
) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = level
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if dump:
        so.optimized_model_filepath = dump
    return so


def _session(path: Path | str, **kw: Any) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), _options(**kw), providers=["CPUExecutionProvider"])


def chain(args: argparse.Namespace) -> None:
    """Section 2: every block as its own graph against the static graph, two layouts."""
    root = Path(args.work) / f"{args.model}-light"
    manifest = json.loads((root / "manifest.json").read_text())
    names = ["stem"] + [b["variants"][-1]["graph"] for b in manifest["blocks"]] + ["head"]
    levels = {
        "ENABLE_ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "ENABLE_EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }
    for label, level in levels.items():
        full = _session(root / "graphs" / "full.onnx", level=level)
        parts = [_session(root / "graphs" / f"{g}.onnx", level=level) for g in names]
        inputs = [s.get_inputs()[0].name for s in parts]

        def run_chain(
            x: np.ndarray, parts: list[Any] = parts, inputs: list[str] = inputs
        ) -> np.ndarray:
            for s, name in zip(parts, inputs, strict=True):
                x = s.run(None, {name: x})[0]
            return x

        def run_full(x: np.ndarray, full: Any = full) -> Any:
            return full.run(None, {"image": x})

        for batch in (1, 8):
            x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32), np.float32)
            a = cpu_ms(_on(run_full, x), 10)
            b = cpu_ms(_on(run_chain, x), 10)
            print(
                f"{args.model} {label} b{batch}: static {a:.2f} ms, chain of "
                f"{len(parts)} graphs {b:.2f} ms, ratio {b / a:.2f}",
                flush=True,
            )


def _blocked_block(source: Path, dump: Path, channels: int, hw: int) -> onnx.ModelProto:
    """ORT's optimised identity-shortcut block with the boundary reorders removed and the
    residual add + ReLU fused into the second conv (its `Sum` input): NCHWc in, NCHWc out."""
    _session(source, dump=str(dump))
    model = onnx.load(str(dump))
    ops = [n.op_type for n in model.graph.node]
    if ops != ["ReorderInput", "Conv", "Conv", "ReorderOutput", "Add", "Relu"]:
        raise SystemExit(
            f"{source.name}: unexpected optimised graph {ops}; the prototype "
            "handles identity-shortcut ResNet blocks only"
        )
    conv1, conv2 = model.graph.node[1], model.graph.node[2]
    conv1.input[0] = "xb"
    conv2.input.append("xb")
    conv2.output[0] = "yb"
    conv2.attribute.append(helper.make_attribute("activation", "Relu"))
    del model.graph.node[:]
    model.graph.node.extend([conv1, conv2])
    shape: list[str | int] = ["batch", channels, hw, hw]
    del model.graph.input[:]
    model.graph.input.append(helper.make_tensor_value_info("xb", TensorProto.FLOAT, shape))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("yb", TensorProto.FLOAT, shape))
    return model


def _reorder(op: str, width: int, hw: int, **attrs: Any) -> onnx.ModelProto:
    node = helper.make_node(op, ["i"], ["o"], domain="com.microsoft.nchwc", **attrs)
    shape: list[str | int] = ["batch", width, hw, hw]
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("i", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft.nchwc", 1)],
    )
    model.ir_version = 8
    return model


def nchwc(args: argparse.Namespace) -> None:
    """Section 2 prototype: stage 1 (identity-shortcut blocks) with the NCHWc layout kept
    across block graphs, against NCHW block graphs and one graph of the stage."""
    import tempfile

    root = Path(args.work) / f"{args.model}-light" / "graphs"
    names = [f"block{b:03d}" for b in range(args.blocks)]
    off = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        plain = [_session(root / f"{n}.onnx") for n in names]
        blocked = []
        for n in names:
            model = _blocked_block(root / f"{n}.onnx", Path(tmp) / f"{n}.opt.onnx", 16, 32)
            onnx.save(model, str(Path(tmp) / f"{n}.nchwc.onnx"))
            blocked.append(_session(Path(tmp) / f"{n}.nchwc.onnx", level=off))
        to_blocked = _reorder("ReorderInput", 16, 32)
        from_blocked = _reorder("ReorderOutput", 16, 32, channels=16)
        onnx.save(to_blocked, str(Path(tmp) / "in.onnx"))
        onnx.save(from_blocked, str(Path(tmp) / "out.onnx"))
        r_in, r_out = (
            _session(Path(tmp) / "in.onnx", level=off),
            _session(Path(tmp) / "out.onnx", level=off),
        )
        merged = onnx.load(str(root / f"{names[0]}.onnx"))
        for i, n in enumerate(names[1:], 1):
            part = onnx.compose.add_prefix(onnx.load(str(root / f"{n}.onnx")), f"b{i}_")
            merged = onnx.compose.merge_models(
                merged, part, io_map=[(merged.graph.output[0].name, f"b{i}_x")]
            )
        onnx.save(merged, str(Path(tmp) / "stage.onnx"))
        one = _session(Path(tmp) / "stage.onnx")

        def run_plain(x: np.ndarray) -> np.ndarray:
            for s in plain:
                x = s.run(None, {"x": x})[0]
            return x

        def run_blocked(x: np.ndarray) -> np.ndarray:
            h = r_in.run(None, {"i": x})[0]
            for s in blocked:
                h = s.run(None, {"xb": h})[0]
            out: np.ndarray = r_out.run(None, {"i": h})[0]
            return out

        for batch in (1, 8):
            x = np.random.default_rng(0).standard_normal((batch, 16, 32, 32), np.float32)
            ref = run_plain(x)
            np.testing.assert_allclose(run_blocked(x), ref, atol=1e-4, rtol=1e-4)
            a = cpu_ms(_on(run_plain, x), 10)
            b = cpu_ms(_on(run_blocked, x), 10)
            c = cpu_ms(_on(lambda x: one.run(None, {"x": x}), x), 10)
            print(
                f"{args.model} blocks 0-{args.blocks - 1} b{batch}: NCHW block graphs "
                f"{a:.2f} ms ({a / c:.2f}x), NCHWc-persistent {b:.2f} ms ({b / c:.2f}x), "
                f"one graph {c:.2f} ms",
                flush=True,
            )


def memory(args: argparse.Namespace) -> None:
    """Section 4: runtime RSS with one arena per session and with one shared arena."""
    root = Path(args.work) / f"{args.model}-light"
    for arena in ("per-session", "shared"):
        rss = runtime_rss(root, threads=1, shared_arena=arena == "shared")["rss_mib"]
        print(f"{args.model} runtime RSS, {arena} arena: {rss:.0f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", choices=["chain", "nchwc", "memory"])
    ap.add_argument("model", choices=["resnet56", "resnet110", "resnext29"])
    ap.add_argument("--work", default=str(WORK))
    ap.add_argument("--blocks", type=int, default=9, help="nchwc: stage-1 blocks to chain")
    args = ap.parse_args()
    experiments: dict[str, Callable[[argparse.Namespace], None]] = {
        "chain": chain,
        "nchwc": nchwc,
        "memory": memory,
    }
    experiments[args.experiment](args)


if __name__ == "__main__":
    main()
