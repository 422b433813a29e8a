"""Who runs the model next: one request chunk at a time, first come first served, with a
bounded queue, a deadline per request and an orderly stop.

Without it, a request waited for the model as long as the model was busy: one
21,399-image request made a one-image request wait 44 s, and at SIGTERM the requests
still waiting got a plain-text 500 after the 30 s grace period. Now a full queue is
answered 503 with Retry-After at once, a request still waiting at its deadline gets 503,
and at shutdown requests already received are still served for DRAIN_S seconds,
then any left waiting get 503, while running ones finish (at most `--max-batch`
images): every request gets a JSON answer within a stated bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from budget_edge.errors import ConfigError
from budget_edge.serve.clock import Clock
from budget_edge.serve.errors import UnavailableError

DEFAULT_MAX_QUEUE = 100  # requests waiting for the model; the 101st gets 503 at once
DEFAULT_TIMEOUT_S = 30.0  # the longest a request may take, queue included
RETRY_AFTER_S = 1
# After SIGTERM, how long requests already received may still wait for the model; any
# still waiting then get 503. Running requests always finish.
DRAIN_S = 10.0


class Admission:
    """A FIFO turn at the model for each chunk of a request.

    Made in any thread; used only from the server's event loop (asyncio objects bind
    to the loop that first waits on them). Deadlines are read on `clock` (tests pass
    one they move by hand).
    """

    def __init__(
        self,
        max_queue: int = DEFAULT_MAX_QUEUE,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Clock | None = None,
    ) -> None:
        if max_queue < 1:
            raise ConfigError(f"--max-queue must be at least 1, got {max_queue}")
        if not timeout_s > 0:
            raise ConfigError(f"--request-timeout must be positive, got {timeout_s}")
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.clock = clock or Clock()
        self.waiting = 0  # requests waiting for a turn now (the queue depth)
        self.closing = False
        self._model = asyncio.Lock()  # FIFO: waiters are woken in arrival order
        self._closed = asyncio.Event()
        self._drain_deadline = float("inf")

    def deadline(self, requested_s: float | None = None) -> float:
        """The time on `clock` by which a request arriving now must be answered: the
        server's timeout, or the client's own `timeout` if that is shorter."""
        limit = self.timeout_s if requested_s is None else min(self.timeout_s, requested_s)
        return self.clock.now() + limit

    @contextlib.asynccontextmanager
    async def turn(self, deadline: float, started: bool = False) -> AsyncIterator[None]:
        """Hold the model for one chunk. `started`: an earlier chunk of this request ran,
        so it is never refused as queue overflow nor cut short by a shutdown."""
        if not started:
            if self.waiting >= self.max_queue:
                raise UnavailableError(
                    f"the server is busy: {self.waiting} requests are already waiting for "
                    f"the model (serve --max-queue {self.max_queue}); retry shortly",
                    retry_after=RETRY_AFTER_S,
                )
        self.waiting += 1
        try:
            await self._acquire(deadline, started)
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._model.release()

    def close(self, drain_s: float | None = None) -> None:
        """Begin to stop: requests already here keep their place for `drain_s` more
        seconds (DRAIN_S), then those still waiting are answered 503; new ones get 503."""
        self.closing = True
        self._drain_deadline = self.clock.now() + (DRAIN_S if drain_s is None else drain_s)
        self._closed.set()

    async def _acquire(self, deadline: float, started: bool) -> None:
        acquire = asyncio.ensure_future(self._model.acquire())
        holding = False
        try:
            while True:
                limit = deadline
                if self.closing and not started:
                    limit = min(deadline, self._drain_deadline)
                if limit <= self.clock.now():
                    break
                waits: set[asyncio.Future[Any]] = {acquire}
                closed = None
                if not self.closing and not started:  # wake up to shorten the wait
                    closed = asyncio.ensure_future(self._closed.wait())
                    waits.add(closed)
                try:
                    await self.clock.wait(waits, until=limit)
                finally:
                    if closed is not None:
                        closed.cancel()
                if acquire.done():
                    holding = True
                    return
        finally:
            if not holding:
                if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
                    self._model.release()  # granted as this waiter was being cancelled
                else:
                    acquire.cancel()  # asyncio.Lock hands a turn granted meanwhile on
        raise _stopping() if self.closing and not started else _late(self.timeout_s)


def _stopping() -> UnavailableError:
    return UnavailableError(
        "the server is shutting down: send the request to another "
        "instance or retry after it restarts",
        retry_after=RETRY_AFTER_S,
    )


def _late(timeout_s: float) -> UnavailableError:
    return UnavailableError(
        f"the request waited for the model until its deadline ({timeout_s:g} s, or the "
        "request's own `timeout` parameter): the server is overloaded; retry later or "
        "send smaller batches",
        retry_after=RETRY_AFTER_S,
    )
