"""Where mode 'allocate' spends its time at batch 1, through the runtime.

For each budget c, the first `--images` Fashion-MNIST test images run one by
one through each path below, `--per` consecutive images per path and then the
next, for `--rounds` rounds (a path keeps the machine for a while, as a device
running one budget would; every path sees the same images):

    static            the `full` graph
    backbone          infer(mask=...) with the masks the allocator chose (no decision)
    allocator         the allocator graph alone
    allocator+backbone  the allocator graph, then infer(mask=...): no choice on the host
    allocate          infer(mode="allocate"): all of it
    allocate, switch  the same without whole-mask graphs (every mask by the switch graph)
    greedy            infer(budget=c): the agent alone, its own masks

    python benchmarks/investigations/allocate_decision.py ARTIFACT \\
        --out benchmarks/results/NAME/decision

Writes decision.json and decision.md: mean ms per image and each path over
the static graph's mean.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from budget_edge.data.registry import load_arrays
from budget_edge.runtime.machine import machine_info
from budget_edge.runtime.runtime import BudgetRuntime

PATHS = (
    "static",
    "backbone",
    "allocator",
    "allocator+backbone",
    "allocate",
    "allocate, switch",
    "greedy",
)


def time_budget(
    rt: BudgetRuntime,
    switch_only: BudgetRuntime,
    images: np.ndarray,
    c: float,
    per: int,
    rounds: int,
) -> dict[str, object]:
    masks = rt.infer(images, budget=c, mode="allocate").mask

    def one(i: int) -> np.ndarray:
        return images[i : i + 1]

    calls: dict[str, Callable[[int], object]] = {
        "static": lambda i: rt.run_full(one(i)),
        "backbone": lambda i: rt.infer(one(i), mask=masks[i]),
        "allocator": lambda i: rt.run_allocator(one(i)),
        "allocator+backbone": lambda i: (rt.run_allocator(one(i)), rt.infer(one(i), mask=masks[i])),
        "allocate": lambda i: rt.infer(one(i), budget=c, mode="allocate"),
        "allocate, switch": lambda i: switch_only.infer(one(i), budget=c, mode="allocate"),
        "greedy": lambda i: rt.infer(one(i), budget=c),
    }
    times: dict[str, list[float]] = {p: [] for p in PATHS}
    for r in range(rounds):
        for path in PATHS:
            for j in range(per):
                i = (r * per + j) % len(images)
                t = time.perf_counter()
                calls[path](i)
                times[path].append((time.perf_counter() - t) * 1e3)
    static = float(np.mean(times["static"]))
    return {
        "budget": c,
        "usage": float(masks.mean()),
        "distinct_masks": len(np.unique(masks, axis=0)),
        "mean_ms": {p: float(np.mean(v)) for p, v in times.items()},
        "mean_x_static": {p: float(np.mean(v)) / static for p, v in times.items()},
    }


def markdown(result: dict[str, object]) -> str:
    rows = result["budgets"]
    assert isinstance(rows, list)
    m = result["machine"]
    assert isinstance(m, dict)
    lines = [
        f"# allocate at batch 1: where the time goes ({result['artifact']})",
        "",
        f"- machine: {m['cpu']}, {m['cpu_count']} cores ({m['usable_cores']} usable), "
        f"load average {m['load_average']}",
        f"- command: `{result['command']}`",
        "",
        "Mean latency per image over the static graph's:",
        "",
        "| c | usage | masks | " + " | ".join(PATHS[1:]) + " | static ms |",
        "|---:|---:|---:|" + "---:|" * (len(PATHS) - 1) + "---:|",
    ]
    for row in rows:
        x = row["mean_x_static"]
        lines.append(
            f"| {row['budget']:g} | {row['usage']:.3f} | {row['distinct_masks']} | "
            + " | ".join(f"{x[p]:.2f}x" for p in PATHS[1:])
            + f" | {row['mean_ms']['static']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(doc: str, budgets: str, rounds: int) -> argparse.Namespace:
    """The command line both allocate scripts take (shared with allocate_one_call.py)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--out", required=True, help="path prefix of the .json and .md")
    parser.add_argument("--budgets", default=budgets)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--per", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=rounds)
    return parser.parse_args()


def main() -> None:
    args = parse_args(__doc__ or "", "0.3,0.5,0.7,0.9", 20)
    rt = BudgetRuntime.load(args.artifact, threads=1)
    if not rt.has_allocator:
        raise SystemExit(
            "this artifact has no allocator: export a checkpoint made by `budget-edge allocate`"
        )
    switch_only = BudgetRuntime.load(args.artifact, threads=1)
    switch_only._whole.clear()  # no whole-mask graphs: the switch graph runs every mask
    run_budgets(
        args,
        "allocate_decision.py",
        markdown,
        lambda images, c: time_budget(rt, switch_only, images, c, args.per, args.rounds),
    )


def run_budgets(
    args: argparse.Namespace,
    script: str,
    markdown: Callable[[dict[str, object]], str],
    time_one: Callable[[np.ndarray, float], dict[str, object]],
) -> None:
    """Time every budget of `args` on the test images; write and print the result
    (shared with allocate_one_call.py)."""
    images = load_arrays("fashion-mnist", None, "test").subset(args.images).images
    result = {
        "artifact": args.artifact,
        "machine": machine_info(),
        "images": args.images,
        "command": f"python benchmarks/{script} "
        + " ".join(
            [
                args.artifact,
                "--out",
                args.out,
                "--budgets",
                args.budgets,
                "--images",
                str(args.images),
                "--per",
                str(args.per),
                "--rounds",
                str(args.rounds),
            ]
        ),
        "budgets": [time_one(images, float(c)) for c in args.budgets.split(",")],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
