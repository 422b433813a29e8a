"""The status line of a long command, on a terminal and in a log.

On a terminal: rich's spinner with the latest update. Piped to a file (CI,
`make demo > log`, a service manager), a spinner shows nothing until the
command ends, so there each update becomes a line instead, at most one every
`every_s` seconds (the first after `every_s`: a command that fails at once
still prints one line), with the time since the start.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console


class LogStatus:
    """What `console.status` gives, for a console that is not a terminal."""

    def __init__(self, console: Console, every_s: float) -> None:
        self.console = console
        self.every_s = every_s
        self.start = time.monotonic()
        self.last = self.start  # the first line after `every_s`: a quick command says nothing

    def update(self, message: str) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.console.print(f"[{now - self.start:5.0f} s] {message}", soft_wrap=True)


@contextmanager
def status_line(console: Console, text: str, every_s: float = 20.0) -> Iterator[Any]:
    """A spinner on a terminal, timed lines in a log; both take `.update(message)`."""
    if console.is_terminal:
        with console.status(text) as spinner:
            yield spinner
        return
    yield LogStatus(console, every_s)
