"""`--budget` specs: fixed, battery (a sysfs-like file), latency (bench report or startup bench)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from budget_edge.bench.measure import BenchSettings, load_bench_data, run_bench
from budget_edge.errors import ConfigError
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.budget import BatteryBudget, FixedBudget, LatencyBudget
from budget_edge.serve.controller import CALIBRATION, calibrate, parse_budget_spec

from .conftest import artifacts


@pytest.fixture(scope="module")
def runtime(tiny_artifact: Path) -> Iterator[BudgetRuntime]:
    rt = BudgetRuntime.load(tiny_artifact, backend="onnxruntime", threads=1)
    yield rt
    rt.close()


def test_fixed_spec(runtime: BudgetRuntime) -> None:
    controller = parse_budget_spec("fixed:0.25", runtime)
    assert isinstance(controller, FixedBudget)
    assert controller.budget() == 0.25


def test_battery_spec_reads_the_capacity_file(runtime: BudgetRuntime, tmp_path: Path) -> None:
    capacity = tmp_path / "capacity"
    capacity.write_text("85\n")
    full = parse_budget_spec(f"battery:{capacity}", runtime)
    assert isinstance(full, BatteryBudget)
    assert full.budget() == 1.0
    capacity.write_text("12\n")
    low = parse_budget_spec(f"battery:{capacity}", runtime)
    assert low.budget() == 0.3


def test_latency_spec_starts_from_a_table_timed_on_this_machine(runtime: BudgetRuntime) -> None:
    table = calibrate(runtime)
    assert [b for b, _ in table] == CALIBRATION.budgets
    assert all(ms > 0 for _, ms in table)
    generous = parse_budget_spec("latency:100000", runtime)
    assert isinstance(generous, LatencyBudget)
    assert generous.budget() == 1.0  # every budget meets a 100 s deadline
    impossible = parse_budget_spec("latency:0.000001", runtime)
    assert impossible.budget() == CALIBRATION.budgets[0]  # none does: the least it timed


def test_latency_spec_can_start_from_a_bench_report(runtime: BudgetRuntime, tmp_path: Path) -> None:
    settings = BenchSettings(budgets=[0.2, 0.9], batches=[1, 2], warmup=1, iterations=3, rounds=1)
    report = run_bench(runtime, load_bench_data("random", runtime, eval_images=4), settings)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(report.to_dict()))
    controller = parse_budget_spec(f"latency:100000:{path}", runtime)
    assert isinstance(controller, LatencyBudget)
    assert [b for b, _ in controller.table] == [0.2, 0.9]  # batch-1 rows only
    assert controller.table == report.latency_table(1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the bench report"),
        ("{", "is not a `budget-edge bench --json` report"),
        ('{"rows": [{"kind": "budget"}]}', "is not a `budget-edge bench --json` report"),
        ('{"rows": [{"kind": "static", "batch": 1}]}', "has no fp32 budget rows at batch 1"),
    ],
)
def test_bad_bench_reports_are_config_errors(
    runtime: BudgetRuntime, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        parse_budget_spec(f"latency:20:{path}", runtime)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0.5", "is not understood"),
        ("fixed:", "is not understood"),
        ("fixed:half", "'half' is not a finite number"),
        ("fixed:nan", "'nan' is not a finite number"),
        ("fixed:1.5", "must be a number in [0, 1]"),
        ("battery:/no/such/capacity", "is not a file"),
        ("latency:-5", "must be a positive number of ms"),
        ("latency:inf", "is not a finite number"),
        ("thermal:40", "unknown kind 'thermal'"),
    ],
)
def test_bad_specs_are_config_errors(runtime: BudgetRuntime, spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_budget_spec(spec, runtime)
    assert message in str(info.value)


def test_latency_spec_without_a_policy_is_refused(tmp_path: Path) -> None:
    artifacts.write_artifact(artifacts.make_net("resnet"), tmp_path, policy=False)
    with (
        BudgetRuntime.load(tmp_path, backend="onnxruntime", threads=1) as rt,
        pytest.raises(ConfigError, match="has no policy"),
    ):
        parse_budget_spec("latency:20", rt)


def test_a_bench_report_gives_the_rows_of_the_served_precision(
    runtime: BudgetRuntime, tmp_path: Path
) -> None:
    from budget_edge.runtime import read_latency_table

    rows = [
        {"kind": "budget", "batch": 1, "budget": 0.5, "latency": {"p95": 2.0}},
        {"kind": "budget", "batch": 1, "budget": 0.5, "latency": {"p95": 1.0}, "precision": "int8"},
    ]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"rows": rows}))
    assert read_latency_table(str(path)) == [(0.5, 2.0)]  # older reports: fp32
    assert read_latency_table(str(path), "int8") == [(0.5, 1.0)]
    with pytest.raises(ConfigError, match="no fp16 budget rows .*--precision fp16"):
        read_latency_table(str(path), "fp16")


def test_a_bench_report_of_another_decision_mode_is_refused(tmp_path: Path) -> None:
    from budget_edge.runtime import read_latency_table

    rows = [{"kind": "budget", "batch": 1, "budget": 0.5, "latency": {"p95": 2.0}}]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"rows": rows, "settings": {"mode": "greedy"}}))
    assert read_latency_table(str(path), mode="greedy") == [(0.5, 2.0)]
    with pytest.raises(ConfigError, match="measured in mode greedy, but mode allocate"):
        read_latency_table(str(path), mode="allocate")
    # bench --also-mode allocate: the other mode's rows serve it.
    rows.append(
        {"kind": "mode", "name": "allocate", "batch": 1, "budget": 0.5, "latency": {"p95": 0.7}}
    )
    path.write_text(json.dumps({"rows": rows, "settings": {"mode": "greedy"}}))
    assert read_latency_table(str(path), mode="allocate") == [(0.5, 0.7)]
    assert read_latency_table(str(path), mode="greedy") == [(0.5, 2.0)]
    assert read_latency_table(str(path)) == [(0.5, 2.0)]  # no mode: the report's own
    path.write_text(json.dumps(["not", "a", "report"]))
    with pytest.raises(ConfigError, match="is not a `budget-edge bench --json` report"):
        read_latency_table(str(path))
