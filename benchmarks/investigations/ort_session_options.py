"""Which ONNX Runtime session options suit the runtime's many small sessions?

Builds a ResNet-56 shaped network (BatchNorm folded, random weights) with
onnx.helper, as one graph per block plus stem and head (how the runtime runs
it) and as one static graph, then times the chain of sessions and the static
graph under several option sets. Torch-free.

    .venv/bin/python benchmarks/investigations/ort_session_options.py [--iterations 50]

The choice in budget_edge/runtime/backends/onnxruntime_backend.py rests on
the numbers this prints (recorded there with the machine they came from).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


class Graph:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.nodes, self.inits, self.n = rng, [], [], 0  # type: ignore[var-annotated]

    def name(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int) -> str:
        w, b, y = self.name(), self.name(), self.name()
        scale = (2.0 / (cin * k * k)) ** 0.5
        self.inits += [
            numpy_helper.from_array(
                (self.rng.standard_normal((cout, cin, k, k)) * scale).astype(np.float32), w
            ),
            numpy_helper.from_array(np.zeros(cout, np.float32), b),
        ]
        self.nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride] * 2, pads=[k // 2] * 4
            )
        )
        return y

    def op(self, kind: str, ins: list[str], **attrs: Any) -> str:
        y = self.name()
        self.nodes.append(helper.make_node(kind, ins, [y], **attrs))
        return y

    def block(self, x: str, cin: int, cout: int, stride: int) -> str:
        h = self.op("Relu", [self.conv(x, cin, cout, 3, stride)])
        h = self.conv(h, cout, cout, 3, 1)
        sc = x if stride == 1 and cin == cout else self.conv(x, cin, cout, 1, stride)
        return self.op("Relu", [self.op("Add", [h, sc])])

    def save(self, path: Path, x: str, y: str, in_shape: list[Any], out_shape: list[Any]) -> None:
        self.nodes.append(helper.make_node("Identity", [y], ["out"]))
        g = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)],
            initializer=self.inits,
        )
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(path))


def build(root: Path) -> tuple[list[Path], Path]:
    """ResNet-56: stem, 3 stages x 9 blocks (16, 32, 64 channels), head."""
    rng = np.random.default_rng(0)
    plan = [(16, 16, 1)] * 9 + [(16, 32, 2)] + [(32, 32, 1)] * 8 + [(32, 64, 2)] + [(64, 64, 1)] * 8
    full = Graph(rng)
    h = full.op("Relu", [full.conv("x", 3, 16, 3, 1)])
    for cin, cout, s in plan:
        h = full.block(h, cin, cout, s)
    pooled = full.op("Flatten", [full.op("GlobalAveragePool", [h])])
    full.save(root / "full.onnx", "x", pooled, ["n", 3, 32, 32], ["n", 64])

    parts = []
    rng = np.random.default_rng(0)  # same weights, drawn in the same order
    g = Graph(rng)
    g.save(
        root / "stem.onnx",
        "x",
        g.op("Relu", [g.conv("x", 3, 16, 3, 1)]),
        ["n", 3, 32, 32],
        ["n", 16, 32, 32],
    )
    parts.append(root / "stem.onnx")
    size = 32
    for i, (cin, cout, s) in enumerate(plan):
        g = Graph(rng)
        out = g.block("x", cin, cout, s)
        g.save(
            root / f"b{i}.onnx", "x", out, ["n", cin, size, size], ["n", cout, size // s, size // s]
        )
        size //= s
        parts.append(root / f"b{i}.onnx")
    g = Graph(rng)
    g.save(
        root / "head.onnx",
        "x",
        g.op("Flatten", [g.op("GlobalAveragePool", ["x"])]),
        ["n", 64, 8, 8],
        ["n", 64],
    )
    parts.append(root / "head.onnx")
    return parts, root / "full.onnx"


def options(kind: str, threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if kind == "default":
        return so
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if kind == "intra1":
        so.intra_op_num_threads = 1
        return so
    so.intra_op_num_threads = threads
    if kind == "no-spin":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def time_it(fn: Any, x: np.ndarray, iterations: int) -> tuple[float, float]:
    for _ in range(max(3, iterations // 5)):
        fn(x)
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        parts, full_path = build(Path(tmp))
        print(f"onnxruntime {ort.__version__}; {len(parts)} chained sessions vs one static graph")
        print(
            f"{'options':<12} {'batch':>5} {'chain med':>10} {'p90':>8} {'full med':>9} {'p90':>8}"
        )
        for kind in ("default", "spin", "no-spin", "intra1"):
            so = options(kind, args.threads)
            provs = ["CPUExecutionProvider"]
            sessions = [ort.InferenceSession(str(p), so, providers=provs) for p in parts]
            full = ort.InferenceSession(str(full_path), so, providers=provs)

            names = [s.get_inputs()[0].name for s in sessions]

            def chain(
                x: np.ndarray, sessions: list[Any] = sessions, names: list[str] = names
            ) -> np.ndarray:
                for s, name in zip(sessions, names, strict=True):
                    x = s.run(["out"], {name: x})[0]
                return x

            def static(x: np.ndarray, full: Any = full) -> np.ndarray:
                out: np.ndarray = full.run(["out"], {"x": x})[0]
                return out

            for batch in (1, 8):
                x = np.random.default_rng(1).standard_normal((batch, 3, 32, 32)).astype(np.float32)
                ref = static(x)
                assert np.abs(chain(x) - ref).max() <= 1e-4 * np.abs(ref).max()
                c_med, c_p90 = time_it(chain, x, args.iterations)
                f_med, f_p90 = time_it(static, x, args.iterations)
                print(
                    f"{kind:<12} {batch:>5} {c_med:>10.2f} {c_p90:>8.2f} {f_med:>9.2f} "
                    f"{f_p90:>8.2f}"
                )


if __name__ == "__main__":
    main()
