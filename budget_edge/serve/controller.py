"""The server's budget controller, from `--budget fixed:C | battery:PATH | latency:MS`.

It decides the budget of every request that gives none (no BUDGET input, no
`budget` parameter, no MASK).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from budget_edge.errors import ConfigError
from budget_edge.runtime.budget import BatteryBudget, BudgetController, FixedBudget, LatencyBudget
from budget_edge.runtime.runtime import BudgetRuntime

# Charge (%) -> budget: full model above 60 %, then less and less compute.
BATTERY_SCHEDULE = [(60.0, 1.0), (30.0, 0.6), (0.0, 0.3)]
BATTERY_SAFE_BUDGET = 0.3
# Budgets timed at startup for `latency:MS`, and calls per budget.
CALIBRATION_BUDGETS = (0.25, 0.5, 0.75, 1.0)
CALIBRATION_CALLS = 20

SPEC_HELP = "fixed:C (C in [0, 1]), battery:PATH (a sysfs capacity file) or latency:MS"


def parse_budget_spec(spec: str, runtime: BudgetRuntime) -> BudgetController:
    """The controller a `--budget` value names."""
    kind, sep, argument = spec.partition(":")
    if not sep or not argument:
        raise ConfigError(f"--budget {spec!r} is not understood: use {SPEC_HELP}")
    if kind == "fixed":
        return FixedBudget(_number(argument, spec))
    if kind == "battery":
        if not os.path.isfile(argument):
            raise ConfigError(
                f"--budget {spec!r}: {argument} is not a file: pass a battery capacity file "
                "such as /sys/class/power_supply/BAT0/capacity"
            )
        return BatteryBudget(BATTERY_SCHEDULE, path=argument, safe_budget=BATTERY_SAFE_BUDGET)
    if kind == "latency":
        deadline = _number(argument, spec)
        if deadline <= 0:
            raise ConfigError(f"--budget {spec!r}: the deadline must be a positive number of ms")
        if not runtime.has_policy:
            raise ConfigError(
                f"--budget {spec!r}: this artifact has no policy, so requests must send MASK "
                "and no budget is ever chosen: leave --budget out"
            )
        return LatencyBudget(deadline_ms=deadline, table=calibrate(runtime))
    raise ConfigError(f"--budget {spec!r} has unknown kind {kind!r}: use {SPEC_HELP}")


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"--budget {spec!r}: {text!r} is not a finite number")
    return value


def calibrate(runtime: BudgetRuntime) -> list[tuple[float, float]]:
    """(budget, p95 ms) rows timed on this device at batch 1, as `LatencyBudget` starts from.

    The images are seeded random pixels: the masks they get from the policy are
    not those of real data, so the controller corrects the table by the
    latencies it observes while serving.
    """
    c, h, w = runtime.manifest.preprocessing.input_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(CALIBRATION_CALLS, 1, h, w, c), dtype=np.uint8)
    runtime.infer(images[0], budget=1.0)  # warm-up: first calls allocate
    table = []
    for budget in CALIBRATION_BUDGETS:
        times = []
        for image in images:
            start = time.perf_counter()
            runtime.infer(image, budget=budget)
            times.append((time.perf_counter() - start) * 1e3)
        table.append((budget, float(np.percentile(times, 95))))
    return table
