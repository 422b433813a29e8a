"""Sessions that share one copy of the weights against sessions that keep their own.

Two measurements, each side by side in one process, one ONNX Runtime thread:

1. Round robin over `--sessions` sessions of one graph (`--graph`, default the
   static graph `full`), against one session called every time: what switching
   between graphs costs when each holds its own weights, and when they share
   them (runtime/backends/shared_weights.py).
2. The artifact loaded twice, with and without shared weights: the static
   graph and mode allocate at batch 1 per budget, rows interleaved in rounds of
   `--per` calls over the first 64 test images; and the weight bytes the
   sessions hold against the distinct bytes behind them.

    python benchmarks/investigations/shared_weights.py ARTIFACT \\
        --out benchmarks/results/NAME/shared-weights
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from budget_edge.bench.interleaved import time_rows, write_result
from budget_edge.data.registry import load_arrays
from budget_edge.runtime.backends import onnxruntime_backend as ort_backend
from budget_edge.runtime.backends.shared_weights import WeightPool
from budget_edge.runtime.inputs import prepare_images
from budget_edge.runtime.machine import machine_info
from budget_edge.runtime.manifest import read_checked
from budget_edge.runtime.runtime import BudgetRuntime


def load(artifact: str, shared: bool, seconds: dict[str, float]) -> BudgetRuntime:
    """The runtime with every session made (the time it took goes in `seconds`)."""
    ort_backend.SHARED_WEIGHTS = shared
    start = time.perf_counter()
    try:
        rt = BudgetRuntime.load(artifact, threads=1)
    finally:
        ort_backend.SHARED_WEIGHTS = True
    rt.backend.load([g.name for g in rt.manifest.graphs])  # type: ignore[attr-defined]
    seconds["shared weights" if shared else "own weights"] = time.perf_counter() - start
    return rt


def round_robin(
    rt: BudgetRuntime, graph: str, sessions: int, x: list[np.ndarray], rounds: int
) -> dict[str, float]:
    """Mean us per call: one session, then round robin, plain and from one pool."""
    ort = ort_backend.import_onnxruntime()
    be: Any = rt.backend
    spec = rt.manifest.graph(graph)
    model = read_checked(rt.directory, rt.manifest, spec.file)
    name = spec.inputs[0].name
    pool = WeightPool(ort)
    made = {
        "plain": [
            ort.InferenceSession(
                model,
                sess_options=be._fresh_options(None),  # noqa: SLF001
                providers=be.providers,
            )
            for _ in range(sessions)
        ],
        "shared": [
            pool.session(model, be._fresh_options, be.providers)  # noqa: SLF001
            for _ in range(sessions)
        ],
    }

    def run(group: list[Any], order: list[int]) -> float:
        t = time.perf_counter()
        for j, w in enumerate(order):
            group[w].run(None, {name: x[j % len(x)]})
        return (time.perf_counter() - t) / len(order) * 1e6

    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, group in made.items():
            times.setdefault(f"{label}, one session", []).append(run(group, [0] * 200))
            times.setdefault(f"{label}, round robin", []).append(
                run(group, [i % sessions for i in range(200)])
            )
    return {k: float(np.median(v)) for k, v in times.items()}


def interleaved(
    rows: dict[str, Callable[[int], object]], per: int, rounds: int, n: int
) -> dict[str, dict[str, float]]:
    times = time_rows(rows, per, rounds, n)
    return {
        r: {"median_ms": float(np.median(v)), "mean_ms": float(np.mean(v))}
        for r, v in times.items()
    }


def run_static(rt: BudgetRuntime, pool: list[np.ndarray], i: int) -> None:
    rt.run_full(pool[i])


def run_allocate(rt: BudgetRuntime, pool: list[np.ndarray], c: float, i: int) -> None:
    rt.infer(pool[i], budget=c, mode="allocate")


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    rr = result["round_robin"]
    one = rr["plain, one session"]
    lines = [
        f"# Shared weights against a copy per session ({result['artifact']})",
        "",
        f"- machine: {m['cpu']}, {m['cpu_count']} cores ({m['usable_cores']} usable), "
        f"load average {m['load_average']}, one ONNX Runtime thread",
        f"- command: `{result['command']}`",
        "",
        f"Round robin over {result['sessions']} sessions of `{result['graph']}` "
        "(median us per call, and over one plain session's):",
        "",
        "| sessions | one session | round robin |",
        "|---|---:|---:|",
    ]
    for label in ("plain", "shared"):
        a, b = rr[f"{label}, one session"], rr[f"{label}, round robin"]
        lines.append(f"| {label} | {a:.0f} ({a / one:.3f}x) | {b:.0f} ({b / one:.3f}x) |")
    rows = result["rows"]
    static = rows["static, own weights"]["median_ms"]
    lines += [
        "",
        f"The artifact loaded twice ({result['rounds']} rounds of {result['per']} "
        "calls per row; median (mean) over the static graph's with its own weights; "
        f"weights held {result['weight_bytes'][0] / 1e6:.1f} MB, distinct "
        f"{result['weight_bytes'][1] / 1e6:.1f} MB; every graph's session made in "
        f"{result['load_seconds']['own weights']:.2f} s with its own weights, "
        f"{result['load_seconds']['shared weights']:.2f} s shared):",
        "",
        "| row | own weights | shared weights |",
        "|---|---:|---:|",
    ]
    static_mean = rows["static, own weights"]["mean_ms"]
    labels = dict.fromkeys(r.rsplit(", ", 1)[0] for r in rows)
    for label in labels:
        cells = []
        for how in ("own weights", "shared weights"):
            row = rows[f"{label}, {how}"]
            cells.append(f"{row['median_ms'] / static:.2f}x ({row['mean_ms'] / static_mean:.2f}x)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--graph", default="full")
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--budgets", default="0.3,0.5,0.7")
    parser.add_argument("--per", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", required=True, help="path prefix of the .json and .md")
    args = parser.parse_args()
    seconds: dict[str, float] = {}
    own, shared = load(args.artifact, False, seconds), load(args.artifact, True, seconds)
    images = load_arrays("fashion-mnist", None, "test").subset(64).images
    pool = [np.ascontiguousarray(images[i : i + 1]) for i in range(len(images))]
    floats = [prepare_images(x, own.manifest.preprocessing) for x in pool]
    rows: dict[str, Callable[[int], object]] = {}
    for how, rt in (("own weights", own), ("shared weights", shared)):
        rows[f"static, {how}"] = functools.partial(run_static, rt, pool)
        for c in (float(b) for b in args.budgets.split(",")):
            rows[f"allocate c = {c:g}, {how}"] = functools.partial(run_allocate, rt, pool, c)
    result: dict[str, Any] = {
        "artifact": args.artifact,
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(),
        "graph": args.graph,
        "sessions": args.sessions,
        "per": args.per,
        "rounds": args.rounds,
        "round_robin": round_robin(own, args.graph, args.sessions, floats, args.rounds),
        "rows": interleaved(rows, args.per, args.rounds, len(pool)),
        "weight_bytes": list(shared.backend.weight_bytes),  # type: ignore[attr-defined]
        "load_seconds": seconds,
    }
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
