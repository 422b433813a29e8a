"""Rows timed side by side, and the result files the scripts in benchmarks/ write.

Each row is a call taking an index into a pool of inputs. Every row first
runs once on every input, untimed (ONNX Runtime makes sessions on first use;
that is start-up, not steady state); then the rows take turns, `per`
consecutive calls each, for `rounds` rounds, so a change of machine load
lands on every row, as `budget-edge bench` times its rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def time_rows(
    rows: dict[str, Callable[[int], object]], per: int, rounds: int, n: int
) -> dict[str, list[float]]:
    """Milliseconds per call of each row, over inputs 0..n-1 in turn."""
    for call in rows.values():
        for i in range(n):
            call(i)
    times: dict[str, list[float]] = {row: [] for row in rows}
    for r in range(rounds):
        for row, call in rows.items():
            for j in range(per):
                i = (r * per + j) % n
                start = time.perf_counter()
                call(i)
                times[row].append((time.perf_counter() - start) * 1e3)
    return times


def write_result(out: str, result: dict[str, Any], markdown: str) -> None:
    """OUT.json and OUT.md (folders made as needed), and the Markdown on stdout."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(result, indent=2))
    path.with_suffix(".md").write_text(markdown)
    print(markdown)
