"""The clock behind the server's deadlines: request timeouts and the drain at shutdown
(serve/admission.py), the time to send a request head or a body (serve/server.py,
serve/app.py).

Every deadline asks one `Clock` for the time, for a timer, or to wait until a time,
so a test can pass a clock it moves by hand and check each deadline without waiting
for it (and without asserting how long anything took).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol


class Timer(Protocol):
    """What `Clock.call_later` returns: a callback that can still be called off."""

    def cancel(self) -> None: ...


class Clock:
    """The real clock: `time.monotonic` (what asyncio's timers use) and asyncio's timers.

    `call_later` and `wait` must be called in the event loop's thread.
    """

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Call `callback` in the running loop `delay` seconds from now."""
        return asyncio.get_running_loop().call_later(delay, callback)

    async def wait(self, futures: Iterable[asyncio.Future[Any]], until: float) -> None:
        """Return when one of `futures` is done or the clock reads `until`, whichever
        comes first; the futures are left as they are."""
        await asyncio.wait(
            set(futures), timeout=max(0.0, until - self.now()), return_when=asyncio.FIRST_COMPLETED
        )
