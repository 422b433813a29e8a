"""The server's budget controller, from `--budget fixed:C | battery:PATH | latency:MS[:BENCH]`.

It decides the budget of every request that gives none (no BUDGET input, no
`budget` parameter, no MASK).
"""

from __future__ import annotations

import dataclasses
import math
import os

from budget_edge.bench.measure import BenchSettings, load_bench_data, run_bench
from budget_edge.errors import ConfigError
from budget_edge.runtime.budget import (
    BatteryBudget,
    BudgetController,
    FixedBudget,
    LatencyBudget,
    read_latency_table,
)
from budget_edge.runtime.runtime import BudgetRuntime

# Charge (%) -> budget: full model above 60 %, then less and less compute.
BATTERY_SCHEDULE = [(60.0, 1.0), (30.0, 0.6), (0.0, 0.3)]
BATTERY_SAFE_BUDGET = 0.3
# The short bench `latency:MS` runs at startup when no bench JSON is given.
CALIBRATION = BenchSettings(
    budgets=[0.25, 0.5, 0.75, 1.0], batches=[1], warmup=5, iterations=20, rounds=1
)
CALIBRATION_IMAGES = 32

SPEC_HELP = (
    "fixed:C (C in [0, 1]), battery:PATH (a sysfs capacity file) or latency:MS "
    "(optionally latency:MS:BENCH.json from `budget-edge bench --json`)"
)


def parse_budget_spec(
    spec: str, runtime: BudgetRuntime, mode: str | None = None
) -> BudgetController:
    """The controller a `--budget` value names; `mode` is the decision mode served
    (None: the artifact's), which a latency table must have been measured in."""
    check_budget_spec(spec)
    mode = mode or runtime.default_mode
    kind, _, argument = spec.partition(":")
    if kind == "fixed":
        return FixedBudget(_number(argument, spec))
    if kind == "battery":
        if not os.path.isfile(argument):
            raise ConfigError(
                f"--budget {spec!r}: {argument} is not a file: pass a battery capacity file "
                "such as /sys/class/power_supply/BAT0/capacity"
            )
        return BatteryBudget(BATTERY_SCHEDULE, path=argument, safe_budget=BATTERY_SAFE_BUDGET)
    # latency: the only kind left
    deadline_text, _, bench_json = argument.partition(":")
    if not runtime.has_policy:
        raise ConfigError(
            f"--budget {spec!r}: this artifact has no policy, so requests must send MASK "
            "and no budget is ever chosen: leave --budget out"
        )
    table = (
        read_latency_table(bench_json, runtime.precision, mode)
        if bench_json
        else calibrate(runtime, mode)
    )
    return LatencyBudget(deadline_ms=_number(deadline_text, spec), table=table)


def check_budget_spec(spec: str) -> None:
    """Refuse a `--budget` value by its text alone (kind, numbers), before anything
    loads; what needs the artifact or a file is checked by parse_budget_spec."""
    kind, sep, argument = spec.partition(":")
    if not sep or not argument:
        raise ConfigError(f"--budget {spec!r} is not understood: use {SPEC_HELP}")
    if kind == "fixed":
        FixedBudget(_number(argument, spec))  # in [0, 1]
    elif kind == "latency":
        if _number(argument.partition(":")[0], spec) <= 0:
            raise ConfigError(f"--budget {spec!r}: the deadline must be a positive number of ms")
    elif kind != "battery":
        raise ConfigError(f"--budget {spec!r} has unknown kind {kind!r}: use {SPEC_HELP}")


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"--budget {spec!r}: {text!r} is not a finite number")
    return value


def calibrate(runtime: BudgetRuntime, mode: str | None = None) -> list[tuple[float, float]]:
    """(budget, p95 ms) at batch 1 from a short bench on seeded random pixels.

    Random pixels do not get the masks real data gets, so the table is only a
    start: `LatencyBudget` rescales it by the latencies it observes while serving.
    """
    data = load_bench_data("random", runtime, eval_images=CALIBRATION_IMAGES)
    settings = dataclasses.replace(CALIBRATION, mode=mode)
    return run_bench(runtime, data, settings).latency_table(1, runtime.precision)
