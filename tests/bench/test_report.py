"""bench reports: JSON, CSV, Markdown and the rich table, written atomically."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from budget_edge.bench import report
from budget_edge.bench.measure import BenchResult, BenchRow, LatencyStats
from budget_edge.errors import ConfigError


def _result(labelled: bool = True) -> BenchResult:
    def stats(ms: float) -> LatencyStats:
        return LatencyStats(ms * 0.9, ms, ms, ms * 1.1, ms * 1.2, ms * 1.3)

    rows = []
    for n in (1, 8):
        acc = 0.9 if labelled else None
        rows.append(BenchRow("static", n, None, stats(2.0 * n), 1e3 / 2.0, 1.0, 1.0, acc))
        rows.append(BenchRow("policy", n, None, stats(0.1 * n), 1e4, flops_share=0.01))
        for c in (0.5, 1.0):
            rows.append(
                BenchRow(
                    "budget",
                    n,
                    c,
                    stats(2.0 * c * n),
                    n / (2e-3 * c * n),
                    c,
                    c * 0.95,
                    0.8 * c if labelled else None,
                    {
                        "policy": 0.1,
                        "stem": 0.2,
                        "blocks": 1.0,
                        "head": 0.1,
                        "hot": 0.0,
                        "total": 1.4,
                    },
                )
            )
    return BenchResult(
        rows=rows,
        model={
            "directory": "artifacts/r56",
            "backbone": "resnet56",
            "num_components": 27,
            "full_flops": 251_000_000,
            "base_flops": 1_000_000,
            "policy_flops": 2_580_000,
        },
        data={
            "name": "cifar10" if labelled else "random",
            "eval_images": 100,
            "labelled": labelled,
        },
        settings={"iterations": 100, "warmup": 10, "rounds": 5, "mode": "allocate"},
        environment={
            "cpu": "Test CPU",
            "cpu_count": 2,
            "usable_cores": 2,
            "os": "Linux",
            "backend": "onnxruntime",
            "threads_effective": 2,
            "load_average_before": [0.5, 0.5, 0.5],
            "load_average_after": [0.6, 0.5, 0.5],
            "versions": {"numpy": "2.0"},
        },
    )


def test_json_round_trips_every_row(tmp_path: Path) -> None:
    path = report.write_json(_result(), tmp_path / "bench.json")
    data = json.loads(path.read_text())
    assert [r["label"] for r in data["rows"]] == ["static", "policy", "c=0.5", "c=1"] * 2
    first = data["rows"][2]
    assert first["latency"]["p99"] == pytest.approx(1.3)
    assert first["budget"] == 0.5
    assert data["environment"]["cpu"] == "Test CPU"
    assert not list(tmp_path.glob(".bench.json.*"))  # no temporary file left behind


def test_csv_has_one_line_per_row_with_trtexec_fields(tmp_path: Path) -> None:
    path = report.write_csv(_result(), tmp_path / "bench.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert list(rows[0])[:11] == [
        "label",
        "kind",
        "precision",
        "budget",
        "batch",
        "min_ms",
        "mean_ms",
        "median_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
    ]
    assert {r["precision"] for r in rows} == {"fp32"}
    assert rows[3]["label"] == "c=1"
    assert float(rows[3]["blocks_ms"]) == 1.0
    assert rows[1]["accuracy"] == ""
    assert rows[1]["blocks_ms"] == ""


def test_markdown_names_the_machine_and_has_the_table(tmp_path: Path) -> None:
    text = report.write_markdown(_result(labelled=False), tmp_path / "bench.md").read_text()
    assert "Test CPU" in text
    assert "onnxruntime, threads 2" in text
    assert "no labels" in text
    assert text.startswith("# budget-edge bench: resnet56, mode allocate")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 8
    assert table[3].startswith("| policy | 1 | 0.09 | 0.10 |")


def test_markdown_says_what_the_per_image_decision_adds_over_one_mask(tmp_path: Path) -> None:
    result = _result()
    budget = next(r for r in result.rows if r.kind == "budget" and r.budget == 0.5)
    budget.paired_uniform = {
        "against": "count mask c=0.5",
        "usage": 0.5,
        "against_usage": 0.519,
        "accuracy_delta": 0.012,
        "p_value": 3e-4,
    }
    text = report.write_markdown(result, tmp_path / "bench.md").read_text()
    assert "**The per-image decision against one mask for every image**" in text
    assert "| c=0.5 | 0.500 | count mask c=0.5 | 0.519 | +1.20 | 0.0003 |" in text
    plain = report.write_markdown(_result(), tmp_path / "plain.md").read_text()
    assert "per-image decision against" not in plain  # nothing to say without mask rows

    def pair(against: str, ms: float, its: float, delta: float, p: float) -> dict:
        keys = ("against", "ms", "against_ms", "accuracy_delta", "p_value")
        return dict(zip(keys, (against, ms, its, delta, p), strict=True))

    budget.paired_uniform_latency = {
        "median": {
            "no_slower": pair("count mask c=0.4", 0.61, 0.6, -0.001, 0.8),
            "no_faster": None,
        },
        "mean": {
            "no_slower": pair("count mask c=0.5", 0.8, 0.79, -0.02, 0.01),
            "no_faster": pair("count mask c=0.6", 0.8, 0.9, -0.03, 0.001),
        },
    }
    text = report.write_markdown(result, tmp_path / "latency.md").read_text()
    assert "**The per-image decision against one mask for every image at equal latency**" in text
    assert "| c=0.5 | 1 | 0.61 | count mask c=0.4 | 0.60 | -0.10 | 0.8 | none | - | - | - |" in text
    assert (
        "| c=0.5 | 1 | 0.80 | count mask c=0.5 | 0.79 | -2.00 | 0.01 "
        "| count mask c=0.6 | 0.90 | -3.00 | 0.001 |" in text
    )
    with (report.write_csv(result, tmp_path / "latency.csv")).open() as f:
        record = next(r for r in csv.DictReader(f) if r["label"] == "c=0.5")
    assert record["uniform_no_slower_mean_against"] == "count mask c=0.5"
    assert float(record["uniform_no_slower_median_accuracy_delta"]) == -0.001


def test_a_decided_row_is_paired_with_the_mask_of_its_usage_and_precision() -> None:
    """Greedy at c = 0.1 that ran a third of the components is compared with the mask of
    a third, not with the mask of c = 0.1; an int8 row with an int8 mask."""
    from budget_edge.bench.measure import pair_with_uniform

    stats = LatencyStats(1, 1, 1, 1, 1, 1)
    greedy = BenchRow("mode", 1, 0.1, stats, 1.0, usage=0.33, accuracy=0.9, name="greedy")
    int8 = BenchRow("budget", 1, 0.1, stats, 1.0, usage=0.11, accuracy=0.9, precision="int8")
    masks = [BenchRow("static-mask", 1, c, stats, 1.0, usage=c, accuracy=0.8) for c in (0.11, 0.33)]
    int8_mask = BenchRow("static-mask", 1, 0.1, stats, 1.0, usage=0.5, precision="int8")
    rows = [greedy, int8, *masks, int8_mask]
    right = np.array([True, True, False, True])
    pair_with_uniform(rows, {id(r): right for r in rows})
    assert greedy.paired_uniform is not None
    assert greedy.paired_uniform["against"] == "static mask c=0.33"
    assert greedy.paired_uniform["against_usage"] == 0.33
    assert int8.paired_uniform is not None
    assert int8.paired_uniform["against"] == "int8 static mask c=0.1"  # its own precision


def test_a_decided_row_is_paired_with_the_masks_around_its_latency() -> None:
    """A router that spends a third of the components but pays for its decision runs
    between the masks of a third and of two thirds: it must beat the best mask at no more
    latency (issue 22), the mask just slower is shown too; by its mean, pulled up by the
    hard images, the full mask is its only slower partner."""
    from budget_edge.bench.measure import pair_with_uniform

    def stats(median: float, mean: float | None = None) -> LatencyStats:
        return LatencyStats(median, median if mean is None else mean, median, 9, 9, 9)

    router = BenchRow("budget", 1, 0.33, stats(0.5, mean=0.95), 1.0, usage=0.33, accuracy=0.9)
    masks = [
        BenchRow("static-mask", 1, c, stats(ms), 1.0, usage=c, accuracy=acc)
        for c, ms, acc in ((0.2, 0.2, 0.85), (0.33, 0.33, 0.8), (0.66, 0.66, 0.8), (1.0, 1.0, 0.8))
    ]
    batch8 = BenchRow("static-mask", 8, 0.5, stats(0.5), 1.0, usage=0.5, accuracy=0.99)
    rows = [router, *masks, batch8]
    mine = np.array([True, True, True, False])
    theirs = np.array([True, False, False, False])
    pair_with_uniform(rows, {id(r): (mine if r is router else theirs) for r in rows})
    assert router.paired_uniform is not None
    assert router.paired_uniform["against"] == "static mask c=0.33"  # by usage
    pairs = router.paired_uniform_latency
    assert pairs is not None
    by_median, by_mean = pairs["median"], pairs["mean"]
    no_slower, no_faster = by_median["no_slower"], by_median["no_faster"]
    assert no_slower is not None
    assert no_faster is not None
    assert no_slower["against"] == "static mask c=0.2"  # the most accurate at <= 0.5 ms
    assert (no_slower["ms"], no_slower["against_ms"]) == (0.5, 0.2)
    assert no_slower["accuracy_delta"] == pytest.approx(0.5)
    assert no_slower["p_value"] == pytest.approx(0.5)  # 2 discordant pairs, both its way
    assert no_faster["against"] == "static mask c=0.66"  # the fastest at >= 0.5 ms, batch 1
    assert by_mean["no_faster"] is not None
    assert by_mean["no_faster"]["against"] == "static mask c=1"
    assert by_mean["no_faster"]["ms"] == 0.95
    slow = BenchRow("budget", 1, 0.9, stats(2.0), 1.0, usage=0.9, accuracy=0.9)
    fast = BenchRow("mode", 1, 0.1, stats(0.1), 1.0, usage=None, accuracy=0.9, name="greedy")
    pair_with_uniform([slow, fast, *masks], {id(r): mine for r in [slow, fast, *masks]})
    assert slow.paired_uniform_latency is not None
    assert slow.paired_uniform_latency["median"]["no_faster"] is None  # nothing that slow
    assert fast.paired_uniform_latency is not None  # no usage: still paired by latency
    assert fast.paired_uniform_latency["mean"]["no_slower"] is None  # nothing that fast
    assert fast.paired_uniform is None


def test_budgets_that_ran_the_same_masks_report_their_median_latency(tmp_path: Path) -> None:
    """Past saturation several budgets run one decision: each row reports the median of
    their latencies, not its own luck (issue 22: the README once quoted the fastest)."""
    from budget_edge.bench.measure import _Quality, group_identical_decisions

    def row(kind: str, c: float, ms: float, batch: int = 1, name: str | None = None) -> BenchRow:
        stats = LatencyStats(ms, ms, ms, ms, ms, ms)
        return BenchRow(kind, batch, c, stats, 1.0, usage=0.4, accuracy=0.9, name=name)

    static = BenchRow("static", 1, None, LatencyStats(2, 2, 2, 2, 2, 2), 1.0, accuracy=0.9)
    saturated = [row("budget", c, ms) for c, ms in ((0.4, 0.94), (0.7, 1.04), (1.0, 1.00))]
    low = row("budget", 0.2, 0.5)
    greedy = row("mode", 0.4, 0.8, name="greedy")  # the same masks, another method
    batch8 = row("budget", 0.4, 3.0, batch=8)  # the same masks, another batch size
    rows = [static, low, *saturated, greedy, batch8]

    def quality(digest: str) -> _Quality:
        return _Quality(0.4, 0.4, None, 1, digest)

    qualities = {id(r): quality("same") for r in [*saturated, greedy, batch8]}
    qualities[id(low)] = quality("other")
    group_identical_decisions(rows, qualities)
    for r in saturated:
        assert r.same_decisions == [0.4, 0.7, 1.0]
        assert r.reported_ms == pytest.approx(1.00)  # the median, not the fastest 0.94
    assert low.same_decisions is None
    assert low.reported_ms == 0.5
    assert greedy.same_decisions is None
    assert batch8.same_decisions is None

    result = _result()
    result.rows = rows
    text = report.write_markdown(result, tmp_path / "bench.md").read_text()
    assert "| c=0.4 | 1 | 0.94 | 0.94 | 0.94 | 0.94 | 0.94 | 0.94 | 0.50* |" in text
    assert "- c = 0.4, 0.7, 1, batch 1: median 1.00 ms (their medians 0.94-1.04 ms)" in text
    csv_row = next(r for r in report.csv_records(result) if r["label"] == "c=0.4")
    assert (csv_row["reported_ms"], csv_row["same_decisions"]) == (1.0, "0.4 0.7 1")


def test_rich_table_has_every_row() -> None:
    console = Console(width=200, record=True)
    console.print(report.rich_table(_result()))
    text = console.export_text()
    for label in ("static", "policy", "c=0.5", "c=1"):
        assert label in text
    assert "80.0%" in text  # accuracy at c=1.0


def test_reports_refuse_missing_folders_and_directories(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        report.write_json(_result(), tmp_path / "no" / "bench.json")
    with pytest.raises(ConfigError, match="is a folder"):
        report.write_csv(_result(), tmp_path)


def test_the_verdict_is_the_fastest_row_as_accurate_as_the_best() -> None:
    from budget_edge.bench.measure import LatencyStats

    def row(kind: str, ms: float, acc: float, ci: tuple[float, float], c: float | None = None):
        stats = LatencyStats(ms, ms, ms, ms, ms, ms)
        return BenchRow(kind, 1, c, stats, 1e3 / ms, accuracy=acc, accuracy_ci=ci)

    rows = [
        row("static", 2.0, 0.930, (0.925, 0.935)),
        row("budget", 1.0, 0.928, (0.923, 0.933), 0.5),  # its interval reaches 93.0%
        row("budget", 0.6, 0.900, (0.894, 0.906), 0.25),  # faster, but clearly worse
    ]
    result = BenchResult(rows, {}, {"labelled": True}, {}, {})
    line = report.verdict(result)
    assert line is not None
    assert line.startswith("batch 1: deploy c=0.5 (92.8%, 1.00 ms, 0.50x")
    assert "as accurate as the best row, static (93.0%" in line
    unlabelled = BenchResult([row("static", 2.0, 0.9, (0.8, 1.0))], {}, {}, {}, {})
    unlabelled.rows[0].accuracy = None
    assert report.verdict(unlabelled) is None
