"""What routing costs beyond its blocks: each row against the count masks at its usage."""

import sys
from pathlib import Path

import pytest

INVESTIGATIONS = Path(__file__).resolve().parents[2] / "benchmarks" / "investigations"
sys.path.insert(0, str(INVESTIGATIONS))

import routing_overhead  # noqa: E402


def timed(kind: str, usage: float, mean: float, hot: float, policy: float = 0.0, **more) -> dict:
    return {
        "kind": kind,
        "batch": 1,
        "precision": "fp32",
        "usage": usage,
        "latency": {"mean": mean, "median": mean},
        "breakdown_ms": {"policy": policy, "hot": hot},
        **more,
    }


def count_mask(k: int, mean: float, hot: float) -> dict:
    return timed("static-mask", k / 10, mean, hot, name="count", label=f"count mask c={k / 10:g}")


def bench(rows: list[dict]) -> dict:
    return {"model": {"num_components": 10}, "settings": {}, "rows": rows}


def test_a_row_is_measured_against_the_count_masks_around_its_usage() -> None:
    masks = [count_mask(2, 0.2, 0.15), count_mask(6, 0.6, 0.55)]
    # Usage 0.4 lies half way: the count masks would take 0.4 ms, 0.35 of it in graphs.
    router = timed("budget", 0.4, 0.55, hot=0.45, policy=0.06, label="c=0.4")
    agent = timed("mode", 0.4, 0.46, hot=0.375, policy=0.1, label="greedy c=0.4")
    text = routing_overhead.report(bench([*masks, router, agent]))
    assert "| c=0.4 | 4.0 | 0.550 | 0.550 | 0.400 | +0.150 (+38%) | 0.060 | +0.100 |" in text
    assert "| greedy c=0.4 | 4.0 | 0.460 | 0.460 | 0.400 | +0.060 (+15%) | 0.100 | +0.025 |" in text
    assert "\n| count mask c=" not in text  # the yardstick, not a row measured against it


def test_searched_static_masks_and_other_precisions_are_not_the_yardstick() -> None:
    masks = [count_mask(2, 0.2, 0.2), count_mask(6, 0.6, 0.6)]
    searched = timed("static-mask", 0.4, 9.0, 9.0, name=None, label="static mask c=0.4")
    int8 = {**count_mask(4, 9.0, 9.0), "precision": "int8"}
    router = timed("budget", 0.4, 0.4, 0.4, label="c=0.4")
    text = routing_overhead.report(bench([*masks, searched, int8, router]))
    assert "| c=0.4 | 4.0 | 0.400 | 0.400 | 0.400 | +0.000 (+0%)" in text


def test_a_bench_without_count_masks_says_what_to_run() -> None:
    with pytest.raises(SystemExit, match="--count-table"):
        routing_overhead.report(bench([timed("budget", 0.4, 0.5, 0.4, label="c=0.4")]))
