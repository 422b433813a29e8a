"""Budget controllers for device software: where the budget c of each call comes from.

Each controller has ``budget() -> float`` in [0, 1]; those that learn from
measured latency also have ``observe(latency_ms)``. Combine them with
:func:`min_of` so the tightest constraint wins. A device loop::

    from budget_edge.runtime import BudgetRuntime
    from budget_edge.runtime.budget import BatteryBudget, LatencyBudget, min_of

    rt = BudgetRuntime.load("artifacts/resnet56")
    control = min_of(
        BatteryBudget([(60, 1.0), (30, 0.6), (0, 0.3)], safe_budget=0.3),
        # (budget, p95 ms) rows from `budget-edge bench --json` on this device
        LatencyBudget(deadline_ms=20.0, table=[(0.25, 6.1), (0.5, 9.8), (1.0, 17.5)]),
    )
    while running:
        frame = camera.read()                                  # uint8 HxWxC
        result = rt.infer(frame[None], budget=control.budget(), cap="flops")
        control.observe(result.latency_ms["total"])
        publish(result.classes[0])
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from budget_edge.errors import ConfigError

POWER_SUPPLY = Path("/sys/class/power_supply")


class BudgetController(Protocol):
    def budget(self) -> float:
        """The budget for the next inference call, in [0, 1]."""
        ...


def _check_budget(value: float, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ConfigError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


class FixedBudget:
    """The same budget every call (a power mode chosen by the integrator)."""

    def __init__(self, value: float) -> None:
        self.value = _check_budget(value, "the fixed budget")

    def budget(self) -> float:
        return self.value

    def observe(self, latency_ms: float, budget: float | None = None) -> None:
        """Latency does not move a fixed budget."""


def find_battery(root: Path = POWER_SUPPLY) -> Path | None:
    """The capacity file of the first power supply of type Battery, if any."""
    if not root.is_dir():
        return None
    for supply in sorted(root.iterdir()):
        try:
            kind = (supply / "type").read_text().strip()
        except OSError:
            continue
        if kind == "Battery" and (supply / "capacity").exists():
            return supply / "capacity"
    return None


class BatteryBudget:
    """Budget from the battery charge (Linux sysfs `capacity`, 0..100 %).

    schedule: (capacity threshold %, budget) pairs; the budget of the highest
    threshold the charge reaches applies, e.g. [(60, 1.0), (30, 0.6), (0, 0.3)].
    hysteresis: percentage points the charge must pass a threshold by before the
    level changes, in either direction, so a charge hovering at 60 % does not
    flip the budget every call. A missing or garbled reading gives safe_budget.
    The file is re-read at most every poll_s seconds.
    """

    def __init__(
        self,
        schedule: Sequence[tuple[float, float]],
        path: str | Path | None = None,
        safe_budget: float = 0.25,
        hysteresis: float = 3.0,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not schedule:
            raise ConfigError(
                "the battery schedule is empty: give (capacity %, budget) pairs "
                "such as [(60, 1.0), (30, 0.6), (0, 0.3)]"
            )
        levels = []
        for threshold, value in schedule:
            if not 0.0 <= float(threshold) <= 100.0:
                raise ConfigError(f"battery threshold {threshold!r} is not a percentage 0..100")
            levels.append((float(threshold), _check_budget(value, "a schedule budget")))
        levels.sort(reverse=True)
        if len({t for t, _ in levels}) != len(levels):
            raise ConfigError("the battery schedule lists a threshold twice")
        if hysteresis < 0 or poll_s < 0:
            raise ConfigError("hysteresis and poll_s must not be negative")
        self.levels = levels  # highest threshold first
        self.path = Path(path) if path is not None else find_battery()
        self.safe_budget = _check_budget(safe_budget, "safe_budget")
        self.hysteresis = float(hysteresis)
        self.poll_s = float(poll_s)
        self._clock = clock
        self._level: int | None = None
        self._last_read = -math.inf
        self._value = self.safe_budget

    def read_capacity(self) -> float | None:
        """The charge in percent, or None when the file is missing or garbled."""
        if self.path is None:
            return None
        try:
            value = float(self.path.read_text().strip())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return value if math.isfinite(value) and 0.0 <= value <= 100.0 else None

    def _plain_level(self, capacity: float) -> int:
        for i, (threshold, _) in enumerate(self.levels):
            if capacity >= threshold:
                return i
        return len(self.levels) - 1  # below every threshold: the lowest level

    def update(self, capacity: float | None) -> float:
        """Move the level for this reading (with hysteresis) and return the budget."""
        if capacity is None:
            self._value = self.safe_budget
            return self._value
        if self._level is None:
            self._level = self._plain_level(capacity)
        else:
            up = self._plain_level(capacity - self.hysteresis)
            down = self._plain_level(capacity + self.hysteresis)
            if up < self._level:  # charged well past a higher threshold
                self._level = up
            elif down > self._level:  # drained well below the current threshold
                self._level = down
        self._value = self.levels[self._level][1]
        return self._value

    def budget(self) -> float:
        now = self._clock()
        if now - self._last_read >= self.poll_s:
            self._last_read = now
            self.update(self.read_capacity())
        return self._value

    def observe(self, latency_ms: float, budget: float | None = None) -> None:
        """The battery does not react to latency."""


class LatencyBudget:
    """Keeps the moving p95 latency under a deadline by moving the budget.

    table: (budget, p95 ms) rows measured by `budget-edge bench` on the device.
    It gives the starting budget (the largest whose p95 meets the deadline) and
    the shape of latency against budget. Each observed latency is divided by the
    table's p95 at the budget that ran, so the moving p95 of these ratios says
    how much slower (> 1) or faster (< 1) the device runs now than when it was
    benchmarked (thermal throttling, a busy CPU, another power mode). The
    controller then moves towards the largest budget predicted to meet
    `deadline_ms * target`, at most `max_step` per call: down as soon as the
    deadline is at risk, up only after `min_samples` observations since the
    last move.
    """

    def __init__(
        self,
        deadline_ms: float,
        table: Sequence[tuple[float, float]],
        window: int = 100,
        min_samples: int = 20,
        target: float = 0.95,
        max_step: float = 0.1,
        deadband: float = 0.02,
        min_budget: float | None = None,
        max_budget: float = 1.0,
    ) -> None:
        # min_budget None: the table's lowest budget. Below what was measured (and what
        # the artifact was made for) a tight deadline would drop every block, and every
        # frame would get the same class; pass 0.0 to allow it anyway.
        if not (math.isfinite(deadline_ms) and deadline_ms > 0):
            raise ConfigError(f"deadline_ms must be a positive number, got {deadline_ms!r}")
        rows = sorted((_check_budget(b, "a table budget"), float(ms)) for b, ms in table)
        if not rows or any(not (math.isfinite(ms) and ms > 0) for _, ms in rows):
            raise ConfigError(
                "the latency table needs (budget, p95 ms) rows with positive "
                "times: take them from `budget-edge bench --json`"
            )
        if len({b for b, _ in rows}) != len(rows):
            raise ConfigError("the latency table lists a budget twice")
        if not 1 <= min_samples <= window:
            raise ConfigError("min_samples must be between 1 and window")
        if not (0 < target <= 1 and 0 < max_step <= 1 and 0 <= deadband < 1):
            raise ConfigError("target and max_step must be in (0, 1], deadband in [0, 1)")
        self.deadline_ms = float(deadline_ms)
        self.table = rows
        self.min_samples = min_samples
        self.target = target
        self.max_step = max_step
        self.deadband = deadband
        self.min_budget = _check_budget(
            rows[0][0] if min_budget is None else min_budget, "min_budget"
        )
        self.max_budget = _check_budget(max_budget, "max_budget")
        if self.min_budget > self.max_budget:
            raise ConfigError("min_budget is above max_budget")
        self._ratios: deque[float] = deque(maxlen=window)
        self._latencies: deque[float] = deque(maxlen=window)
        self._since_move = 0
        self._budget = self._best_budget(scale=1.0)

    def table_p95(self, budget: float) -> float:
        """p95 from the table, linear between rows, flat beyond them."""
        rows = self.table
        if budget <= rows[0][0]:
            return rows[0][1]
        for (b0, t0), (b1, t1) in itertools.pairwise(rows):
            if budget <= b1:
                return t0 + (t1 - t0) * (budget - b0) / (b1 - b0)
        return rows[-1][1]

    def _best_budget(self, scale: float) -> float:
        """The largest budget (min_budget, or on a 1 % grid above it) predicted to meet
        deadline * target."""
        limit = self.deadline_ms * self.target
        grid = [i / 100 for i in range(101) if self.min_budget < i / 100 <= self.max_budget]
        best = self.min_budget
        for b in grid:
            if self.table_p95(b) * scale <= limit:
                best = b
        return best

    def p95(self) -> float | None:
        """Moving p95 of the observed latencies (ms), None before the first."""
        return _p95(self._latencies) if self._latencies else None

    def observe(self, latency_ms: float, budget: float | None = None) -> None:
        """Record one call's latency; `budget` is what ran (default: this controller's)."""
        if not math.isfinite(latency_ms) or latency_ms < 0:
            return  # a broken timer reading must not steer the budget
        ran = self._budget if budget is None else budget
        self._ratios.append(latency_ms / self.table_p95(ran))
        self._latencies.append(float(latency_ms))
        self._since_move += 1
        if len(self._ratios) < self.min_samples:
            return
        wanted = self._best_budget(scale=_p95(self._ratios))
        delta = wanted - self._budget
        if abs(delta) < self.deadband:
            return
        if delta > 0 and self._since_move < self.min_samples:
            return  # raise the budget only on evidence gathered since the last move
        step = max(-self.max_step, min(self.max_step, delta))
        self._budget = min(self.max_budget, max(self.min_budget, self._budget + step))
        self._since_move = 0

    def budget(self) -> float:
        return self._budget


def _p95(values: Sequence[float] | deque[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class MinBudget:
    """The smallest budget of several controllers; latencies go to all of them,
    with the budget that actually ran."""

    def __init__(self, controllers: Sequence[BudgetController]) -> None:
        if not controllers:
            raise ConfigError("min_of needs at least one controller")
        self.controllers = list(controllers)
        self._last: float | None = None

    def budget(self) -> float:
        self._last = min(c.budget() for c in self.controllers)
        return self._last

    def observe(self, latency_ms: float, budget: float | None = None) -> None:
        ran = self._last if budget is None else budget
        for c in self.controllers:
            observe = getattr(c, "observe", None)
            if observe is not None:
                observe(latency_ms, ran)


def min_of(*controllers: BudgetController) -> MinBudget:
    """Combine controllers: each call gets the tightest of their budgets."""
    return MinBudget(controllers)


def read_latency_table(
    path: str, precision: str = "fp32", mode: str | None = None
) -> list[tuple[float, float]]:
    """(budget, p95 ms) of the batch-1 budget rows of a `budget-edge bench --json` file, for
    the graph set being served (reports older than `--precision` are fp32). With `mode`,
    the rows must have been measured in that decision mode: the report's own, or one it
    measured beside it (`bench --also-mode`); the same budget costs another time in
    another mode."""
    try:
        with open(path, encoding="utf-8") as file:
            report: Any = json.load(file)
        measured = report.get("settings", {}).get("mode")
        # Rows of another mode than the report's are kind "mode", named by the mode.
        beside = mode is not None and measured is not None and mode != measured
        table = [
            (float(row["budget"]), float(row["latency"]["p95"]))
            for row in report["rows"]
            if (row["kind"], row.get("name")) == (("mode", mode) if beside else ("budget", None))
            and row["batch"] == 1
            and row.get("precision", "fp32") == precision
        ]
    except OSError as exc:
        raise ConfigError(f"cannot read the bench report {path} ({exc.strerror})") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{path} is not a `budget-edge bench --json` report ({type(exc).__name__}: {exc})"
        ) from exc
    if not table and beside:
        raise ConfigError(
            f"{path} was measured in mode {measured}, but mode {mode} is served: rerun "
            f"`budget-edge bench DIR --batch 1 --mode {mode} --json {path}` (or add "
            f"--also-mode {mode})"
        )
    if not table:
        raise ConfigError(
            f"{path} has no {precision} budget rows at batch 1: run `budget-edge bench DIR "
            f"--batch 1 --precision {precision} --json {path}` on this device"
        )
    return table
