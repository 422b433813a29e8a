"""The status line of a long command, on a terminal and in a log.

On a terminal: rich's spinner with the latest update. Piped to a file (CI,
`make demo > log`, a service manager), a spinner shows nothing until the
command ends, so there the latest update becomes a line instead, at most one every
`every_s` seconds, with the time since the start, and a heartbeat repeats it every
`every_s` seconds while one step runs on without a new update. The first line comes
after `every_s`: a command that fails at once still prints one line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console


class LogStatus:
    """What `console.status` gives, for a console that is not a terminal."""

    def __init__(
        self, console: Console, every_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.console = console
        self.every_s = every_s
        self.clock = clock
        self.start = clock()
        self.last = self.start  # the first line after `every_s`: a quick command says nothing
        self.message: str | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._held = False  # no heartbeat lines while a measurement runs

    def update(self, message: str) -> None:
        with self._lock:
            self.message = message
            self._line_if_due()

    def tick(self) -> None:
        """The heartbeat: the latest update again if no line came for `every_s` (with no
        interval every update is a line already)."""
        if self.every_s <= 0 or self._held:
            return
        with self._lock:
            self._line_if_due()

    @contextmanager
    def held(self) -> Iterator[None]:
        """No heartbeat inside: updates still print, from the caller's thread."""
        self._held = True
        try:
            yield
        finally:
            self._held = False

    def _line_if_due(self) -> None:
        now = self.clock()
        if self.message is not None and now - self.last >= self.every_s:
            self.last = now
            self.console.print(f"[{now - self.start:5.0f} s] {self.message}", soft_wrap=True)

    def run_heartbeat(self) -> None:
        """Tick from a daemon thread until `stop`."""

        def beat() -> None:
            # A quarter of the interval: a line at most that late (never a busy loop).
            # A closed pipe ends this thread quietly: rich raises SystemExit for it.
            while not self._stopped.wait(max(self.every_s / 4, 0.5)):
                self.tick()

        self._heartbeat = threading.Thread(target=beat, name="status-heartbeat", daemon=True)
        self._heartbeat.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._heartbeat is not None:
            self._heartbeat.join()


@contextmanager
def status_line(console: Console, text: str, every_s: float = 20.0) -> Iterator[Any]:
    """A spinner on a terminal, timed lines in a log; both take `.update(message)`."""
    if console.is_terminal:
        with console.status(text) as spinner:
            yield spinner
        return
    status = LogStatus(console, every_s)
    status.run_heartbeat()
    try:
        yield status
    finally:
        status.stop()


@contextmanager
def no_output_threads(status: Any) -> Iterator[None]:
    """Nothing printed from another thread inside (timed calls share the CPU with
    whatever prints): a log's heartbeat holds, a terminal's spinner stops. Updates
    from the caller, between timed jobs, still reach a log."""
    if isinstance(status, LogStatus):
        with status.held():
            yield
        return
    status.stop()  # rich's Status: its refresh thread ends
    try:
        yield
    finally:
        status.start()
