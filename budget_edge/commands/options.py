"""Click parameter types for numbers a command can actually use.

click's FloatRange lets ``nan`` through (every comparison with it is false) and ``inf``
through when there is no upper bound; IntRange without a maximum takes 2**70. Every
numeric option goes through these two so that one rule holds everywhere: a number is
finite and inside the range the option can mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import click

# Counts of images, epochs, steps, calls: generous, and still far below what overflows.
MAX_COUNT = 10**9


class FiniteFloat(click.FloatRange):
    """A finite float inside [min, max] (either end optional, open with min_open/max_open)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


class BoundedInt(click.IntRange):
    """An integer inside [min, max]; the default max refuses a typo of ten extra zeros."""

    name = "integer"

    def __init__(self, min: int = 0, max: int = MAX_COUNT) -> None:
        super().__init__(min=min, max=max)


# The largest seed torch, numpy and Python's random all accept.
SEED = BoundedInt(0, 2**32 - 1)
# Intra-op CPU threads; 0 where the option takes it to mean "the cores available".
THREADS = BoundedInt(0, 1024)
# Calibration (quantization ranges, BatchNorm statistics, the hot masks) settles within a
# few thousand images; a larger count is hours of recording on a device-sized machine.
CALIBRATION_IMAGES = BoundedInt(1, 50_000)

MAX_BUDGETS = 1000  # a start:stop:step list beyond this is a typo (0:1:1e-9, say)
MAX_BATCH = 4096  # a timing batch beyond this is a typo, and would exhaust memory first


def parse_budgets(text: str) -> list[float]:
    """'0.25,0.5,1' or start:stop:step with stop included ('0.1:1.0:0.05'), each budget in
    [0, 1], duplicates dropped (they would time or evaluate a row twice). ValueError says
    what is wrong."""
    text = text.strip()
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if not all(map(math.isfinite, (start, stop, step))):
                raise ValueError
            if not step > 0 or not start <= stop:
                raise ValueError
            span = (stop - start) / step  # inf for a step of 5e-324: more than any limit
            count = MAX_BUDGETS + 1 if span > MAX_BUDGETS else int(math.floor(span + 1e-6)) + 1
            budgets = [round(start + i * step, 10) for i in range(min(count, MAX_BUDGETS + 1))]
        else:
            budgets = [float(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(
            f"{text!r} not understood: give a comma list such as 0.25,0.5,1.0 or "
            "start:stop:step with step > 0 and start <= stop, such as 0.1:1.0:0.05"
        ) from None
    if len(budgets) > MAX_BUDGETS:
        raise ValueError(f"{text!r} makes more than {MAX_BUDGETS} budgets: use a larger step")
    bad = [b for b in budgets if not (math.isfinite(b) and 0.0 <= b <= 1.0)]
    if bad:
        raise ValueError(f"budget {bad[0]:g} is outside [0, 1] (the fraction of the model to use)")
    return list(dict.fromkeys(budgets))


def parse_batches(text: str) -> list[int]:
    """'1,8' -> [1, 8]: batch sizes, each in [1, MAX_BATCH], duplicates dropped."""
    try:
        batches = [int(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(
            f"{text!r} not understood: give batch sizes as a comma list of whole numbers, "
            "such as 1,8"
        ) from None
    if any(b < 1 for b in batches):
        raise ValueError(f"{text!r}: every batch size must be at least 1")
    if any(b > MAX_BATCH for b in batches):
        raise ValueError(f"{text!r}: batch sizes above {MAX_BATCH} would not fit in memory")
    return list(dict.fromkeys(batches))


class ParsedList(list):  # type: ignore[type-arg]
    """A parsed list that keeps the text it was read from, for the command line a report
    records ('0.1:1.0:0.05' says more than its 19 values)."""

    def __init__(self, values: Iterable[Any] = (), text: str = "") -> None:
        super().__init__(values)
        self.text = text


class ListOf(click.ParamType):
    """A comma (or range) list read by one of the parsers above."""

    def __init__(self, name: str, parse: Callable[[str], list[Any]]) -> None:
        self.name = name
        self.parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):  # already converted (a default given as a list)
            return value
        try:
            return ParsedList(self.parse(str(value)), str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


BUDGETS = ListOf("budgets", parse_budgets)
BATCHES = ListOf("batches", parse_batches)


class Renamed(click.Option):
    """An option whose older spellings (`old`) still parse but no longer show in --help
    or in error hints: a rename keeps yesterday's scripts working for a release while
    the help teaches one vocabulary."""

    def __init__(self, *args: Any, old: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.old_names = tuple(old)
        missing = [name for name in self.old_names if name not in self.opts]
        if missing or len(self.old_names) >= len(self.opts):
            raise TypeError(f"{self.opts}: old names {self.old_names} must be among them")

    @contextmanager
    def _current_names(self) -> Iterator[None]:
        every = self.opts
        self.opts = [name for name in every if name not in self.old_names]
        try:
            yield
        finally:
            self.opts = every

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        with self._current_names():
            return super().get_help_record(ctx)

    def get_error_hint(self, ctx: click.Context | None) -> str:
        with self._current_names():
            return super().get_error_hint(ctx)
