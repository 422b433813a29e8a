"""Click parameter types for numbers a command can actually use.

click's FloatRange lets ``nan`` through (every comparison with it is false) and ``inf``
through when there is no upper bound; IntRange without a maximum takes 2**70. Every
numeric option goes through these two so that one rule holds everywhere: a number is
finite and inside the range the option can mean.
"""

from __future__ import annotations

import math
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
