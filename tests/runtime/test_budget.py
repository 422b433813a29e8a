"""Budget controllers: fixed, battery (hysteresis, bad readings), latency (convergence), min_of."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from budget_edge.errors import ConfigError
from budget_edge.runtime.budget import (
    BatteryBudget,
    FixedBudget,
    LatencyBudget,
    find_battery,
    min_of,
)

SCHEDULE = [(60, 1.0), (30, 0.6), (0, 0.3)]


def test_fixed_budget() -> None:
    assert FixedBudget(0.4).budget() == 0.4
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ConfigError, match="fixed budget"):
            FixedBudget(bad)


def _battery(tmp_path: Path, value: str, **kwargs: object) -> tuple[BatteryBudget, Path]:
    path = tmp_path / "capacity"
    path.write_text(value)
    return BatteryBudget(SCHEDULE, path=path, poll_s=0.0, **kwargs), path  # type: ignore[arg-type]


def test_battery_schedule_levels(tmp_path: Path) -> None:
    for charge, expected in [
        ("100\n", 1.0),
        ("60", 1.0),
        ("59", 0.6),
        ("30", 0.6),
        ("29", 0.3),
        ("0", 0.3),
    ]:
        control, _ = _battery(tmp_path, charge)
        assert control.budget() == expected, charge


def test_battery_hysteresis_going_down(tmp_path: Path) -> None:
    control, path = _battery(tmp_path, "70", hysteresis=3.0)
    assert control.budget() == 1.0
    for charge, expected in [
        (59, 1.0),
        (58, 1.0),
        (57.5, 1.0),
        (56.9, 0.6),
        (58, 0.6),
        (61, 0.6),
        (62.9, 0.6),
    ]:
        path.write_text(str(charge))
        assert control.budget() == expected, charge


def test_battery_hysteresis_going_up(tmp_path: Path) -> None:
    control, path = _battery(tmp_path, "20", hysteresis=3.0)
    assert control.budget() == 0.3
    for charge, expected in [(30, 0.3), (32.9, 0.3), (33, 0.6), (28, 0.6), (62, 0.6), (63, 1.0)]:
        path.write_text(str(charge))
        assert control.budget() == expected, charge


def test_battery_big_jump_crosses_several_levels(tmp_path: Path) -> None:
    control, path = _battery(tmp_path, "95")
    assert control.budget() == 1.0
    path.write_text("5")
    assert control.budget() == 0.3


@pytest.mark.parametrize("content", ["", "abc", "-5", "250", "nan", "\xff\xfe"])
def test_battery_garbage_gives_safe_budget(tmp_path: Path, content: str) -> None:
    control, path = _battery(tmp_path, "80", safe_budget=0.2)
    assert control.budget() == 1.0
    path.write_text(content, encoding="latin-1")
    assert control.read_capacity() is None
    assert control.budget() == 0.2
    path.write_text("80")  # a good reading again: back to the schedule
    assert control.budget() == 1.0


def test_battery_missing_file_gives_safe_budget(tmp_path: Path) -> None:
    control = BatteryBudget(SCHEDULE, path=tmp_path / "nope", safe_budget=0.35)
    assert control.budget() == 0.35


def test_battery_polls_at_most_every_poll_s(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "capacity"
    path.write_text("90")
    control = BatteryBudget(SCHEDULE, path=path, poll_s=5.0, clock=lambda: now[0])
    assert control.budget() == 1.0
    path.write_text("10")
    now[0] = 4.0
    assert control.budget() == 1.0  # cached
    now[0] = 5.0
    assert control.budget() == 0.3


def test_find_battery(tmp_path: Path) -> None:
    assert find_battery(tmp_path / "none") is None
    (tmp_path / "AC").mkdir()
    (tmp_path / "AC" / "type").write_text("Mains\n")
    assert find_battery(tmp_path) is None
    (tmp_path / "BAT0").mkdir()
    (tmp_path / "BAT0" / "type").write_text("Battery\n")
    (tmp_path / "BAT0" / "capacity").write_text("42\n")
    assert find_battery(tmp_path) == tmp_path / "BAT0" / "capacity"


def test_battery_config_errors() -> None:
    with pytest.raises(ConfigError, match="empty"):
        BatteryBudget([])
    with pytest.raises(ConfigError, match="percentage"):
        BatteryBudget([(120, 1.0)])
    with pytest.raises(ConfigError, match="schedule budget"):
        BatteryBudget([(50, 2.0)])
    with pytest.raises(ConfigError, match="twice"):
        BatteryBudget([(50, 1.0), (50, 0.5)])
    with pytest.raises(ConfigError, match="safe_budget"):
        BatteryBudget(SCHEDULE, safe_budget=-1)


TABLE = [(0.25, 4.0), (0.5, 7.0), (0.75, 10.0), (1.0, 13.0)]


def test_latency_starts_from_the_table() -> None:
    assert LatencyBudget(10.0, TABLE, target=1.0).budget() == pytest.approx(0.75)
    assert LatencyBudget(100.0, TABLE).budget() == 1.0
    # Nothing meets the deadline: the table's lowest budget, not 0.0 (which would drop
    # every block and give every frame the same class), unless the firmware asks.
    assert LatencyBudget(1.0, TABLE).budget() == 0.25
    assert LatencyBudget(1.0, TABLE, min_budget=0.0).budget() == 0.0
    c = LatencyBudget(10.0, TABLE)
    assert c.table_p95(0.1) == 4.0
    assert c.table_p95(0.625) == pytest.approx(8.5)


def _simulate(control: LatencyBudget, latency_of: object, steps: int, seed: int = 0) -> list[float]:
    """Device loop against a synthetic latency model with 5 % multiplicative noise."""
    rng = np.random.default_rng(seed)
    seen = []
    for _ in range(steps):
        b = control.budget()
        latency = latency_of(b) * float(rng.lognormal(0.0, 0.05))  # type: ignore[operator]
        control.observe(latency)
        seen.append(latency)
    return seen


@pytest.mark.parametrize("slowdown", [1.6, 0.7])
def test_latency_converges_when_the_device_is_slower_or_faster(slowdown: float) -> None:
    """The device runs 1.6x slower (throttled) or faster than benchmarked."""
    deadline = 10.0
    control = LatencyBudget(deadline, TABLE)

    def latency_of(b: float) -> float:
        return slowdown * control.table_p95(b)

    seen = _simulate(control, latency_of, 600)
    tail = np.array(seen[-200:])
    assert np.percentile(tail, 95) <= deadline
    # near the best budget possible: one step more would break the deadline
    best = max(b / 100 for b in range(101) if latency_of(b / 100) * 1.09 <= deadline)
    assert control.budget() == pytest.approx(best, abs=0.06)


def test_latency_converges_when_the_table_has_the_wrong_shape() -> None:
    """Real latency has a large fixed cost the table does not show."""
    deadline = 10.0
    control = LatencyBudget(deadline, [(0.0, 1.0), (1.0, 11.0)])

    def latency_of(b: float) -> float:
        return 5.0 + 6.0 * b

    seen = _simulate(control, latency_of, 1000, seed=1)
    assert np.percentile(seen[-200:], 95) <= deadline
    assert control.budget() == pytest.approx(0.7, abs=0.1)


def test_latency_ignores_broken_readings() -> None:
    control = LatencyBudget(10.0, TABLE, min_samples=1)
    start = control.budget()
    control.observe(float("nan"))
    control.observe(-1.0)
    assert control.budget() == start
    assert control.p95() is None


def test_latency_config_errors() -> None:
    with pytest.raises(ConfigError, match="deadline_ms"):
        LatencyBudget(0.0, TABLE)
    with pytest.raises(ConfigError, match="latency table"):
        LatencyBudget(10.0, [])
    with pytest.raises(ConfigError, match="latency table"):
        LatencyBudget(10.0, [(0.5, -1.0)])
    with pytest.raises(ConfigError, match="min_samples"):
        LatencyBudget(10.0, TABLE, window=10, min_samples=20)
    with pytest.raises(ConfigError, match="min_budget"):
        LatencyBudget(10.0, TABLE, min_budget=0.8, max_budget=0.5)


def test_min_of_takes_the_tightest_and_passes_the_budget_that_ran(tmp_path: Path) -> None:
    path = tmp_path / "capacity"
    path.write_text("10")
    battery = BatteryBudget(SCHEDULE, path=path)
    latency = LatencyBudget(10.0, TABLE, min_samples=5)
    control = min_of(battery, latency, FixedBudget(0.9))
    assert control.budget() == 0.3  # the battery is the tightest
    # Latencies measured at 0.3 match the table exactly: the latency controller
    # must not mistake them for a fast device at its own (higher) budget.
    before = latency.budget()
    for _ in range(50):
        control.budget()
        control.observe(latency.table_p95(0.3))
    assert latency.budget() == pytest.approx(before, abs=0.02)
    with pytest.raises(ConfigError):
        min_of()
