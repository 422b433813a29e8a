"""What routing costs beyond its blocks: the count masks' line, and each row over it."""

import sys
from pathlib import Path

import pytest

INVESTIGATIONS = Path(__file__).resolve().parents[2] / "benchmarks" / "investigations"
sys.path.insert(0, str(INVESTIGATIONS))

import routing_overhead  # noqa: E402


def timed(kind: str, usage: float, mean: float, label: str = "", policy: float = 0.0) -> dict:
    return {
        "kind": kind,
        "batch": 1,
        "label": label,
        "usage": usage,
        "latency": {"mean": mean, "median": mean},
        "breakdown_ms": {"policy": policy},
    }


def bench(rows: list[dict]) -> dict:
    return {"model": {"num_components": 10}, "settings": {}, "rows": rows}


def test_the_overhead_is_the_mean_over_the_count_masks_line() -> None:
    # Count masks cost 0.1 ms per block; the router at 4 blocks takes 0.55 ms: 0.15 over.
    masks = [timed("static-mask", k / 10, 0.1 * k, f"count mask c={k / 10:g}") for k in (2, 5, 8)]
    router = timed("budget", 0.4, 0.55, "c=0.4", policy=0.05)
    text = routing_overhead.report(bench([*masks, router]))
    assert "0.000 + 0.1000 ms x blocks" in text
    assert "| c=0.4 | 0.400 | 0.550 | 0.550 | 0.400 | +0.150 (+38%) | 0.050 |" in text
    # Count masks themselves are the line, not rows measured against it.
    assert "| count mask" not in text


def test_a_bench_without_count_masks_says_what_to_run() -> None:
    with pytest.raises(SystemExit, match="--count-table"):
        routing_overhead.report(bench([timed("budget", 0.4, 0.5, "c=0.4")]))
