"""Progress display for training: a rich bar on a terminal, plain lines elsewhere.

The bar shows the running loss, accuracy and images per second. When output
is not a terminal (logs, CI) no bar is drawn: a heartbeat line (steps done,
stats, ETA) is printed every `heartbeat_s` seconds instead, so a log shows a
long epoch moving. The per-epoch summary lines are printed either way. Only
rank 0 should build an enabled display.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainDisplay:
    """Epoch bars and summary lines for one training run."""

    def __init__(
        self, enabled: bool = True, console: Console | None = None, heartbeat_s: float = 60.0
    ) -> None:
        self.enabled = enabled
        self.console = console or Console(highlight=False)
        # Bars only make sense on a terminal that redraws in place.
        self.bars = enabled and self.console.is_terminal
        self.heartbeat_s = heartbeat_s

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, markup=False, soft_wrap=True)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[BarUpdate]:
        """A bar of `total` steps; yields `update(steps_done, stats_text)`."""
        if not self.bars:
            yield Heartbeat(self, description, total) if self.enabled else BarUpdate(None, 0)
            return
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with progress:
            task = progress.add_task(description, total=total, stats="")
            yield BarUpdate(progress, task)


class BarUpdate:
    """Moves one bar; does nothing when bars are off."""

    def __init__(self, progress: Progress | None, task: int) -> None:
        self.progress = progress
        self.task = task

    @property
    def active(self) -> bool:
        return self.progress is not None

    def __call__(self, completed: int, stats: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, stats=stats)  # type: ignore[arg-type]


class Heartbeat(BarUpdate):
    """A bar for logs: one line every `heartbeat_s` seconds with the count, stats and ETA."""

    def __init__(self, display: TrainDisplay, description: str, total: int) -> None:
        super().__init__(None, 0)
        self.display = display
        self.description = description
        self.total = total
        self.start = time.monotonic()
        self.last = self.start

    @property
    def active(self) -> bool:
        return True

    def __call__(self, completed: int, stats: str) -> None:
        now = time.monotonic()
        if now - self.last < self.display.heartbeat_s or completed >= self.total:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / max(completed, 1) * (self.total - completed)
        self.display.log(
            f"{self.description}: {completed}/{self.total} steps  {stats}  "
            f"{elapsed:.0f}s elapsed, about {eta:.0f}s left"
        )
