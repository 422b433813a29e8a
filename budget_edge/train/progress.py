"""Progress display for training: a rich bar on a terminal, plain lines elsewhere.

The bar shows the running loss, accuracy and images per second. When output
is not a terminal (logs, CI, tests) no bar is drawn; the per-epoch summary
lines are printed either way. Only rank 0 should build an enabled display.
"""

from __future__ import annotations

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

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(highlight=False)
        # Bars only make sense on a terminal that redraws in place.
        self.bars = enabled and self.console.is_terminal

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, markup=False, soft_wrap=True)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[BarUpdate]:
        """A bar of `total` steps; yields `update(steps_done, stats_text)`."""
        if not self.bars:
            yield BarUpdate(None, 0)
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
