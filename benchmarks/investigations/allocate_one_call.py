"""Mode 'allocate' at batch 1: one call (allocate_switch) against separate graphs.

For each budget c, the first `--images` Fashion-MNIST test images run one by
one through four paths, `--per` consecutive images per path and then the next
path, for `--rounds` rounds (a path keeps the machine for a while, as a device
running one budget would; every path sees the same images):

    static     the `full` graph
    one call   infer(mode="allocate"): the allocate_switch graph alone
    separate   the same runtime without it: allocator graph, choice on the host,
               then a whole-mask graph (hot policy) or the switch graph
    backbone   infer(mask=...) with the masks the allocator chose: no decision

    python benchmarks/investigations/allocate_one_call.py ARTIFACT \\
        --out benchmarks/results/NAME/one-call

Writes one-call.json and one-call.md: mean and median ms per image, each path
over the static graph, the usage.

The allocate_switch graph was tried at commit 051aa7d and reverted (it did not
pay: benchmarks/results/runtime-findings.md, section 7), so this script runs
against that commit's code and an artifact exported by it:

    git worktree add /tmp/one-call 051aa7d
    cp benchmarks/investigations/allocate_{one_call,decision}.py /tmp/one-call/benchmarks/
    cd /tmp/one-call && budget-edge export CKPT --out ART ...
    python /tmp/one-call/benchmarks/allocate_one_call.py ART --out ...

(with the virtualenv's budget_edge pointing at /tmp/one-call, e.g. PYTHONPATH).
Results: benchmarks/results/allocate-one-call/.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from allocate_decision import parse_args, run_budgets  # the script's folder is on sys.path

from budget_edge.runtime.runtime import BudgetRuntime

PATHS = ("static", "one call", "separate", "backbone")


def time_budget(
    rt: BudgetRuntime, separate: BudgetRuntime, images: np.ndarray, c: float, per: int, rounds: int
) -> dict[str, object]:
    masks = rt.infer(images, budget=c, mode="allocate").mask
    calls: dict[str, Callable[[int], object]] = {
        "static": lambda i: rt.run_full(images[i : i + 1]),
        "one call": lambda i: rt.infer(images[i : i + 1], budget=c, mode="allocate"),
        "separate": lambda i: separate.infer(images[i : i + 1], budget=c, mode="allocate"),
        "backbone": lambda i: rt.infer(images[i : i + 1], mask=masks[i]),
    }
    times: dict[str, list[float]] = {p: [] for p in PATHS}
    n = len(images)
    for r in range(rounds):
        for path in PATHS:
            for j in range(per):
                i = (r * per + j) % n
                t = time.perf_counter()
                calls[path](i)
                times[path].append((time.perf_counter() - t) * 1e3)
    static_mean = float(np.mean(times["static"]))
    static_median = float(np.median(times["static"]))
    return {
        "budget": c,
        "usage": float(masks.mean()),
        "distinct_masks": len(np.unique(masks, axis=0)),
        "mean_ms": {p: float(np.mean(v)) for p, v in times.items()},
        "median_ms": {p: float(np.median(v)) for p, v in times.items()},
        "mean_x_static": {p: float(np.mean(v)) / static_mean for p, v in times.items()},
        "median_x_static": {p: float(np.median(v)) / static_median for p, v in times.items()},
    }


def markdown(result: dict[str, object]) -> str:
    rows = result["budgets"]
    assert isinstance(rows, list)
    lines = [
        f"# allocate at batch 1: one call against separate graphs ({result['artifact']})",
        "",
        f"- machine: {_machine_line(result['machine'])}",
        f"- command: `{result['command']}`",
        "",
        "Mean latency over the static graph's (median in brackets):",
        "",
        "| c | usage | masks | one call | separate | backbone alone | static ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        mean, median = row["mean_x_static"], row["median_x_static"]
        cells = [f"{mean[p]:.2f}x ({median[p]:.2f}x)" for p in ("one call", "separate", "backbone")]
        lines.append(
            f"| {row['budget']:g} | {row['usage']:.3f} | {row['distinct_masks']} | "
            + " | ".join(cells)
            + f" | {row['mean_ms']['static']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _machine_line(m: object) -> str:
    assert isinstance(m, dict)
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (
        f"{m['cpu']}, {m['cpu_count']} cores ({m['usable_cores']} usable), "
        f"load average {m['load_average']}; {versions}"
    )


def main() -> None:
    args = parse_args(__doc__ or "", "0.2,0.3,0.4,0.5,0.6,0.7,0.8", 40)
    rt = BudgetRuntime.load(args.artifact, threads=1)
    if rt.manifest.roles.get("allocate_switch") is None:
        raise SystemExit(
            "this artifact has no allocate_switch graph: run this script at "
            "commit 051aa7d on an artifact exported there (see its docstring)"
        )
    separate = BudgetRuntime.load(args.artifact, threads=1)
    separate._allocate_switch = None  # the path every batch > 1 takes
    run_budgets(
        args,
        "allocate_one_call.py",
        markdown,
        lambda images, c: time_budget(rt, separate, images, c, args.per, args.rounds),
    )


if __name__ == "__main__":
    main()
