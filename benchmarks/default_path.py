"""The default path, measured as a user takes it: `export CKPT`, then `infer(image, budget=c)`.

For each checkpoint: export it with no options into a temporary folder, load
it with no options, and classify N test images one at a time with
`rt.infer(x[i:i+1], budget=c)` (no mode: the artifact's own), next to the
artifact's static graph on the same images, interleaved (budget_edge/bench/interleaved.py).
Reports the median latency ratio over the static graph and the accuracy of
both, with 95% intervals and the paired test.

    python benchmarks/default_path.py \\
        benchmarks/results/budgetnet-resnet20-allocate/allocated.pt \\
        benchmarks/results/budgetnet-resnet56-allocate/allocated.pt \\
        --out benchmarks/results/default-path/bench

One core (threads 1); about a minute per checkpoint on a 2-core CPU, most of
it the export.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from budget_edge.bench.interleaved import time_rows, write_result
from budget_edge.bench.significance import mcnemar_exact, wilson_interval
from budget_edge.data.registry import load_arrays
from budget_edge.export.exporter import export_checkpoint
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.machine import machine_info


def measure(checkpoint: Path, budget: float, n: int, rounds: int) -> dict[str, object]:
    images = load_arrays("fashion-mnist", None, "test")
    x, y = images.images[:n], images.labels[:n]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        manifest = export_checkpoint(checkpoint, folder)
        export_s = time.perf_counter() - start
        with BudgetRuntime.load(folder, threads=1) as rt:
            budgeted = np.array(
                [rt.infer(x[i : i + 1], budget=budget).classes[0] for i in range(n)]
            )
            static = rt.run_full(x).argmax(axis=1)
            times = time_rows(
                {
                    "default": lambda i: rt.infer(x[i : i + 1], budget=budget),
                    "static": lambda i: rt.run_full(x[i : i + 1]),
                },
                per=20,
                rounds=rounds,
                n=n,
            )
            mode = rt.default_mode
    right, right_static = budgeted == y, static == y
    test = mcnemar_exact(right, right_static)
    return {
        "checkpoint": str(checkpoint),
        "decision_mode": mode,
        "fused_graphs": len(manifest.hot_policies),
        "export_s": export_s,
        "budget": budget,
        "images": n,
        "latency_ratio": float(np.median(times["default"]) / np.median(times["static"])),
        "default_median_ms": float(np.median(times["default"])),
        "static_median_ms": float(np.median(times["static"])),
        "accuracy": float(right.mean()),
        "accuracy_ci": wilson_interval(int(right.sum()), n),
        "static_accuracy": float(right_static.mean()),
        "static_ci": wilson_interval(int(right_static.sum()), n),
        "paired_delta": test.accuracy_delta,
        "paired_p": test.p_value,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--out", required=True, help="OUT.json and OUT.md")
    args = parser.parse_args()
    rows = [measure(c, args.budget, args.images, args.rounds) for c in args.checkpoints]
    machine = machine_info()
    lines = [
        f"# The default path: `export CKPT`, then `infer(image, budget={args.budget:g})`",
        "",
        f"- machine: {machine['cpu']}, {machine['cpu_count']} cores; ONNX Runtime, 1 thread",
        f"- {args.images} Fashion-MNIST test images, one per call; latency: median of "
        f"{args.rounds * 20} interleaved calls per row",
        f"- command: `python {' '.join(sys.argv)}`",
        "",
        "| checkpoint | mode | fused graphs | x static | accuracy (95% CI) | static | paired |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["accuracy_ci"]  # type: ignore[misc]
        lines.append(
            f"| `{r['checkpoint']}` | {r['decision_mode']} | {r['fused_graphs']} | "
            f"{r['latency_ratio']:.2f} | {r['accuracy']:.2%} ({100 * lo:.1f}-{100 * hi:.1f}) | "
            f"{r['static_accuracy']:.2%} | {100 * r['paired_delta']:+.2f}, "  # type: ignore[operator]
            f"p={r['paired_p']:.2g} |"
        )
    write_result(args.out, {"machine": machine, "rows": rows}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
