"""Mode 'allocate' at batch 1: the general path against the count plan, side by side.

`infer(x, budget=c)` on one image takes the count plan (runtime/count_plan.py);
the same artifact loaded again without its plan takes the general path; both
give the same result. Next to them, the floor: the allocator graph and the count's
whole-mask graph called straight on the backend (no checks, no result), and
the static graph. Rows are interleaved in rounds, `--per` consecutive calls per
row and round, over a pool of the first 64 test images
(budget_edge/bench/interleaved.py).

    python benchmarks/investigations/allocate_batch_one.py ARTIFACT \\
        --out benchmarks/results/NAME/batch-one

Writes batch-one.json and batch-one.md (median and mean per row over the static
graph's, with the machine).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

from budget_edge.bench.interleaved import time_rows, write_result
from budget_edge.data.registry import load_arrays
from budget_edge.runtime.inputs import prepare_images
from budget_edge.runtime.machine import machine_info
from budget_edge.runtime.runtime import BudgetRuntime

ROWS = ("static", "general path", "count plan", "floor: two graph calls")


def time_budget(
    rt: BudgetRuntime,
    general: BudgetRuntime,
    pool: list[np.ndarray],
    c: float,
    per: int,
    rounds: int,
) -> dict[str, object]:
    plan = rt._count_plan  # noqa: SLF001 (the benchmark reads what the runtime planned)
    assert plan is not None, "the artifact has no table of count masks"
    pre = rt.manifest.preprocessing
    be = rt.backend
    floats = [prepare_images(x, pre) for x in pool]
    counts = [plan.count(be.run(plan.allocator, [f])[0], c) for f in floats]
    if any(plan.graphs[k] is None for k in counts):
        raise SystemExit(
            "some counts have no whole-mask graph: export with --fuse-top "
            f"{len(plan.graphs)} or more"
        )

    def floor(i: int) -> None:  # what the two graphs cost with nothing around them
        be.run(plan.allocator, [floats[i]])
        be.run(str(plan.graphs[counts[i]]), [floats[i]])

    calls: dict[str, Callable[[int], object]] = {
        "static": lambda i: rt.run_full(pool[i]),
        "general path": lambda i: general.infer(pool[i], budget=c, mode="allocate"),
        "count plan": lambda i: rt.infer(pool[i], budget=c, mode="allocate"),
        "floor: two graph calls": floor,
    }
    times = time_rows(calls, per, rounds, len(pool))
    static_median = float(np.median(times["static"]))
    static_mean = float(np.mean(times["static"]))
    return {
        "budget": c,
        "usage": float(np.mean([plan.masks[k].mean() for k in counts])),
        "median_ms": {r: float(np.median(v)) for r, v in times.items()},
        "median_x_static": {r: float(np.median(v)) / static_median for r, v in times.items()},
        "mean_x_static": {r: float(np.mean(v)) / static_mean for r, v in times.items()},
    }


def markdown(result: dict[str, object]) -> str:
    m = result["machine"]
    assert isinstance(m, dict)
    lines = [
        f"# Mode allocate at batch 1: general path vs count plan ({result['artifact']})",
        "",
        f"- machine: {m['cpu']}, {m['cpu_count']} cores ({m['usable_cores']} usable), "
        f"load average {m['load_average']}, one ONNX Runtime thread",
        f"- command: `{result['command']}`",
        f"- {result['rounds']} rounds of {result['per']} calls per row, 64 test images",
        "",
        "Median (mean) latency over the static graph's:",
        "",
        "| c | usage | " + " | ".join(ROWS[1:]) + " | static ms |",
        "|---:|---:|" + "---:|" * len(ROWS),
    ]
    rows = result["budgets"]
    assert isinstance(rows, list)
    for row in rows:
        med, mean = row["median_x_static"], row["mean_x_static"]
        cells = [f"{med[r]:.2f}x ({mean[r]:.2f}x)" for r in ROWS[1:]]
        lines.append(
            f"| {row['budget']:g} | {row['usage']:.2f} | "
            + " | ".join(cells)
            + f" | {row['median_ms']['static']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--budgets", default="0.3,0.5,0.6,0.7")
    parser.add_argument("--per", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", required=True, help="path prefix of the .json and .md")
    args = parser.parse_args()
    rt = BudgetRuntime.load(args.artifact, threads=1)
    general = BudgetRuntime.load(args.artifact, threads=1)
    general._count_plan = None  # noqa: SLF001 (every call through the general path)
    images = load_arrays("fashion-mnist", None, "test").subset(64).images
    pool = [np.ascontiguousarray(images[i : i + 1]) for i in range(len(images))]
    budgets = [float(b) for b in args.budgets.split(",")]
    result: dict[str, object] = {
        "artifact": args.artifact,
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(),
        "per": args.per,
        "rounds": args.rounds,
        "budgets": [time_budget(rt, general, pool, c, args.per, args.rounds) for c in budgets],
    }
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
