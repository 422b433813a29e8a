"""What per-image routing costs beyond the blocks it runs, from one bench JSON.

A bench with `--count-table` times each count mask on every image: one fused graph
with k of the K components. Their mean latency against k is close to a line; that line
says what the router's own blocks would cost if every image ran one graph with the
mean number of them. The router's mean latency over that line is its overhead: the
decision (the allocator, or the agent in greedy; the `policy` part of each row's
breakdown) and running a different graph from call to call (at batch 8, one call per
count the batch holds). Also printed: each row's median against its mean, since a
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


def count_mask_line(rows: list[dict[str, Any]], components: int) -> tuple[float, float]:
    """Least-squares fit of the count masks' mean latency: ms = intercept + slope * k."""
    masks = [r for r in rows if r["kind"] == "static-mask"]
    if len(masks) < 2:
        raise SystemExit("the bench has fewer than two count masks: run it with --count-table")
    blocks = np.array([r["usage"] * components for r in masks])
    mean_ms = np.array([r["latency"]["mean"] for r in masks])
    slope, intercept = np.polyfit(blocks, mean_ms, 1)
    return float(intercept), float(slope)


def overhead_rows(result: dict[str, Any], batch: int) -> list[str]:
    components = result["model"]["num_components"]
    rows = [r for r in result["rows"] if r["batch"] == batch]
    intercept, slope = count_mask_line(rows, components)
    lines = [
        f"batch {batch}: count masks' mean latency = {intercept:.3f} + {slope:.4f} ms x blocks",
        "",
        "| row | usage | mean ms | median ms | blocks alone, ms | overhead | decision ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["kind"] not in ("budget", "mode"):
            continue
        alone = intercept + slope * row["usage"] * components
        mean = row["latency"]["mean"]
        decision = (row.get("breakdown_ms") or {}).get("policy")
        lines.append(
            f"| {row['label']} | {row['usage']:.3f} | {mean:.3f} | {row['latency']['median']:.3f}"
            f" | {alone:.3f} | {mean - alone:+.3f} ({100 * (mean / alone - 1):+.0f}%)"
            f" | {'-' if decision is None else f'{decision:.3f}'} |"
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
        "- blocks alone: the count masks' line at the row's usage; overhead: the row's mean"
        " latency over it; decision: the `policy` part of the row's breakdown (the allocator"
        " in mode allocate, the agent in greedy)",
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
