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


class FiniteFloat(click.FloatRange):
    """A finite float inside [min, max] (either end optional, open with min_open/max_open)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


class BoundedInt(click.IntRange):
    """An integer inside [min, max]; both ends are required so that no count is unbounded."""

    name = "integer"

    def __init__(self, min: int, max: int) -> None:
        super().__init__(min=min, max=max)


# The largest seed torch, numpy and Python's random all accept.
SEED = BoundedInt(0, 2**32 - 1)
# Counts of images, epochs and steps: generous, but a typo of ten zeros is refused.
IMAGES = BoundedInt(1, 10**8)
EPOCHS = BoundedInt(0, 10**5)
THREADS = BoundedInt(1, 1024)
