"""Checks every training configuration shares, so the Python API refuses what the CLI does.

The CLI's option types (commands/options.py) refuse nan, inf and huge seeds before a
run starts; these make ``PretrainConfig(lr=float("inf")).check()`` say the same.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

MAX_SEED = 2**32 - 1  # what torch, numpy and random all take


def not_finite(config: Any) -> list[str]:
    """One problem per float field of a dataclass that is NaN or infinite."""
    problems = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            problems.append(
                f"--{field.name.replace('_', '-')} must be a finite number, got {value}"
            )
    return problems


def seed_problem(seed: int) -> list[str]:
    """The seed as a problem, if no random number generator would take it."""
    if 0 <= seed <= MAX_SEED:
        return []
    return [f"--seed must be in [0, {MAX_SEED}], got {seed}"]
