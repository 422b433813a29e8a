"""What per-image routing costs beyond the blocks it runs, from one bench JSON.

A bench with `--count-table` times each count mask on every image: one fused graph
with k of the K components. Interpolated between the two count masks around a row's
usage, their latency says what the row's blocks would cost if every image ran one
graph of that size. The row's mean latency over that is its overhead, in two parts
the bench's breakdown separates: the decision (the allocator in mode allocate, the
agent in greedy: the `policy` part) and the graphs themselves over the count masks'
graph time at that usage (a different graph from call to call; at batch 8, one call
per count the batch holds). Also printed: each row's median against its mean, since a
router that gives easy images few blocks and hard ones many has a wide spread.

    python benchmarks/investigations/routing_overhead.py \\
        benchmarks/results/fair-fmnist/front/bench/front.json \\
        --md benchmarks/results/fair-fmnist/front/bench/routing-overhead.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def count_masks(rows: list[dict[str, Any]], precision: str) -> list[dict[str, Any]]:
    """The count table's rows (not searched static masks) of one precision, by size."""
    masks = [
        r
        for r in rows
        if r["kind"] == "static-mask" and r.get("name") == "count" and r["precision"] == precision
    ]
    if len(masks) < 2:
        raise SystemExit("the bench has fewer than two count masks: run it with --count-table")
    return sorted(masks, key=lambda r: r["usage"])


def at_usage(masks: list[dict[str, Any]], usage: float, value: str) -> float:
    """A count-mask quantity interpolated at `usage`: the mean latency ("mean") or the
    graph part of it ("hot"). Below the smallest count mask it is the smallest's."""
    xs = [m["usage"] for m in masks]
    if value == "mean":
        ys = [m["latency"]["mean"] for m in masks]
    else:
        ys = [m["breakdown_ms"].get(value, 0.0) for m in masks]
    return float(np.interp(usage, xs, ys))


def overhead_rows(result: dict[str, Any], batch: int) -> list[str]:
    components = result["model"]["num_components"]
    rows = [r for r in result["rows"] if r["batch"] == batch]
    lines = [
        f"batch {batch}",
        "",
        "| row | blocks | mean ms | median ms | count masks, ms | overhead | decision ms "
        "| graphs over the count masks' |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["kind"] not in ("budget", "mode"):
            continue
        masks = count_masks(rows, row["precision"])
        alone = at_usage(masks, row["usage"], "mean")
        mean = row["latency"]["mean"]
        breakdown = row.get("breakdown_ms") or {}
        decision = breakdown.get("policy")
        graphs = breakdown.get("hot", 0.0) + breakdown.get("blocks", 0.0)
        graphs_over = graphs - at_usage(masks, row["usage"], "hot")
        below = " (below the smallest)" if row["usage"] < masks[0]["usage"] else ""
        lines.append(
            f"| {row['label']} | {row['usage'] * components:.1f} | {mean:.3f}"
            f" | {row['latency']['median']:.3f} | {alone:.3f}{below}"
            f" | {mean - alone:+.3f} ({100 * (mean / alone - 1):+.0f}%)"
            f" | {'-' if decision is None else f'{decision:.3f}'} | {graphs_over:+.3f} |"
        )
    return lines


def report(result: dict[str, Any]) -> str:
    env = result.get("environment", {})
    lines = [
        "# What routing costs beyond its blocks",
        "",
        f"- bench: `{result['settings'].get('command', '')}`",
        f"- machine: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores;"
        f" {env.get('backend', '?')}, {env.get('threads', '?')} thread(s)",
        "- count masks: their mean latency interpolated at the row's usage (blocks: usage"
        " times the components); overhead: the row's mean over it; decision: the `policy`"
        " part of the row's breakdown (the allocator in mode allocate, the agent in greedy);"
        " graphs over the count masks': the row's graph time over theirs at that usage",
        "",
    ]
    for batch in sorted({r["batch"] for r in result["rows"]}):
        lines += [*overhead_rows(result, batch), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_json", type=Path, help="a `budget-edge bench --json` file")
    parser.add_argument("--md", type=Path, help="write the tables here too")
    args = parser.parse_args()
    text = report(json.loads(args.bench_json.read_text()))
    print(text)
    if args.md:
        args.md.write_text(text)


if __name__ == "__main__":
    main()
