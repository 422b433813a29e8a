"""The admission queue: turns in arrival order, a bounded queue, deadlines, an orderly stop,
and no turn lost when a waiter gives up.

Time is a ManualClock moved by hand and the model is held until an event is set, so
every deadline is checked exactly and no test depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio

import pytest

from budget_edge.errors import ConfigError
from budget_edge.serve.admission import Admission
from budget_edge.serve.errors import UnavailableError

from .conftest import ManualClock


async def _hold(
    admission: Admission,
    log: list[str],
    name: str,
    release: asyncio.Event | None = None,
    deadline_s: float = 10.0,
    started: bool = False,
) -> None:
    """Take a turn, note it, and keep the model until `release` is set (if given)."""
    async with admission.turn(admission.clock.now() + deadline_s, started=started):
        log.append(f"{name} runs")
        if release is not None:
            await release.wait()


async def _settle() -> None:
    """Let every callback and task that is ready run (the clock's timers included)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_turns_are_given_in_arrival_order() -> None:
    async def scenario() -> list[str]:
        admission, log, release = Admission(clock=ManualClock()), [], asyncio.Event()
        first = asyncio.ensure_future(_hold(admission, log, "a", release))
        await _settle()
        tasks = []
        for name in "bcde":
            tasks.append(asyncio.ensure_future(_hold(admission, log, name)))
            await _settle()  # each arrives before the next
        release.set()
        await asyncio.gather(first, *tasks)
        return log

    assert asyncio.run(scenario()) == [f"{n} runs" for n in "abcde"]


def test_a_full_queue_answers_503_with_retry_after_without_waiting() -> None:
    async def scenario() -> UnavailableError:
        admission, log, release = Admission(max_queue=2, clock=ManualClock()), [], asyncio.Event()
        running = asyncio.ensure_future(_hold(admission, log, "running", release))
        await _settle()
        waiting = [asyncio.ensure_future(_hold(admission, log, f"w{i}")) for i in range(2)]
        await _settle()
        assert admission.waiting == 2
        with pytest.raises(UnavailableError) as caught:
            await _hold(admission, log, "third")
        assert not release.is_set()  # refused while the model was still busy
        release.set()
        await asyncio.gather(running, *waiting)
        assert "third runs" not in log
        assert len(log) == 3
        return caught.value

    error = asyncio.run(scenario())
    assert error.status == 503
    assert error.retry_after >= 1
    assert "--max-queue 2" in str(error)


def test_a_request_waiting_past_its_deadline_gets_503_and_the_queue_moves_on() -> None:
    async def scenario() -> list[str]:
        clock = ManualClock()
        admission, log, release = Admission(clock=clock), [], asyncio.Event()
        running = asyncio.ensure_future(_hold(admission, log, "running", release))
        await _settle()
        late = asyncio.ensure_future(_hold(admission, log, "late", deadline_s=5.0))
        await _settle()
        clock.advance(4.9)
        await _settle()
        assert not late.done()  # still within its deadline
        clock.advance(0.2)
        await _settle()
        assert late.done()
        with pytest.raises(UnavailableError, match="deadline"):
            late.result()
        release.set()
        await running
        await _hold(admission, log, "next")  # the model is free again
        return log

    assert asyncio.run(scenario()) == ["running runs", "next runs"]


def test_a_past_deadline_is_refused_before_waiting() -> None:
    async def scenario() -> None:
        with pytest.raises(UnavailableError, match="deadline"):
            await _hold(Admission(clock=ManualClock()), [], "x", deadline_s=-1)

    asyncio.run(scenario())


def test_stopping_serves_waiting_requests_until_the_drain_bound_then_answers_503() -> None:
    async def scenario() -> tuple[list[str], list[object]]:
        clock = ManualClock()
        admission, log, release = Admission(clock=clock), [], asyncio.Event()
        running = asyncio.ensure_future(_hold(admission, log, "running", release))
        await _settle()
        queued = asyncio.ensure_future(_hold(admission, log, "queued"))
        chunk = asyncio.ensure_future(_hold(admission, log, "next-chunk", started=True))
        await _settle()
        admission.close(drain_s=3.0)
        clock.advance(2.9)
        await _settle()
        assert not queued.done()  # within the drain bound it keeps its place
        clock.advance(0.2)  # past the drain bound, the model still busy
        await _settle()
        assert queued.done()
        release.set()
        results = await asyncio.gather(running, queued, chunk, return_exceptions=True)
        return log, results

    log, results = asyncio.run(scenario())
    # The queued request could not start within the drain bound: 503. A later chunk of a
    # request that already ran keeps its turn: a started request always finishes.
    assert isinstance(results[1], UnavailableError)
    assert "shutting down" in str(results[1])
    assert log == ["running runs", "next-chunk runs"]


def test_a_new_request_after_the_stop_began_gets_503_once_the_drain_ends() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        admission, release = Admission(clock=clock), asyncio.Event()
        running = asyncio.ensure_future(_hold(admission, [], "running", release))
        await _settle()
        admission.close(drain_s=1.0)
        clock.advance(1.5)
        with pytest.raises(UnavailableError, match="shutting down"):
            await _hold(admission, [], "late arrival")
        release.set()
        await running

    asyncio.run(scenario())


def test_a_cancelled_waiter_does_not_take_a_turn_with_it() -> None:
    async def scenario() -> list[str]:
        admission, log, release = Admission(clock=ManualClock()), [], asyncio.Event()
        running = asyncio.ensure_future(_hold(admission, log, "running", release))
        await _settle()
        gone = asyncio.ensure_future(_hold(admission, log, "gone"))
        await _settle()
        gone.cancel()
        release.set()
        await running
        await asyncio.wait_for(_hold(admission, log, "after"), timeout=60)  # a hang guard
        return log

    assert asyncio.run(scenario()) == ["running runs", "after runs"]


def test_the_client_timeout_can_only_shorten_the_servers() -> None:
    clock = ManualClock()
    admission = Admission(timeout_s=2.0, clock=clock)
    assert admission.deadline(0.5) == clock.now() + 0.5
    assert admission.deadline(60.0) == clock.now() + 2.0
    assert admission.deadline(None) == clock.now() + 2.0


@pytest.mark.parametrize(
    "kwargs, message", [({"max_queue": 0}, "--max-queue"), ({"timeout_s": 0}, "--request-timeout")]
)
def test_bad_settings_are_config_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Admission(**kwargs)  # type: ignore[arg-type]
