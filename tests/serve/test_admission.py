"""The admission queue: turns in arrival order, a bounded queue, deadlines, an orderly stop,
and no turn lost when a waiter gives up."""

from __future__ import annotations

import asyncio
import time

import pytest

from budget_edge.errors import ConfigError
from budget_edge.serve.admission import Admission
from budget_edge.serve.errors import UnavailableError


async def _hold(admission: Admission, seconds: float, log: list[str], name: str,
                deadline_s: float = 10.0, started: bool = False) -> None:
    async with admission.turn(time.monotonic() + deadline_s, started=started):
        log.append(f"{name} runs")
        await asyncio.sleep(seconds)


def test_turns_are_given_in_arrival_order() -> None:
    async def scenario() -> list[str]:
        admission, log = Admission(), []
        tasks = []
        for name in "abcde":
            tasks.append(asyncio.ensure_future(_hold(admission, 0.01, log, name)))
            await asyncio.sleep(0)  # each arrives before the next
        await asyncio.gather(*tasks)
        return log

    assert asyncio.run(scenario()) == [f"{n} runs" for n in "abcde"]


def test_a_full_queue_answers_503_with_retry_after_at_once() -> None:
    async def scenario() -> UnavailableError:
        admission, log = Admission(max_queue=2), []
        running = asyncio.ensure_future(_hold(admission, 0.3, log, "running"))
        await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(_hold(admission, 0, log, f"w{i}")) for i in range(2)]
        await asyncio.sleep(0.01)
        assert admission.waiting == 2
        start = time.monotonic()
        with pytest.raises(UnavailableError) as caught:
            await _hold(admission, 0, log, "third")
        assert time.monotonic() - start < 0.1  # refused without waiting
        await asyncio.gather(running, *waiting)
        assert "third runs" not in log and len(log) == 3
        return caught.value

    error = asyncio.run(scenario())
    assert error.status == 503 and error.retry_after >= 1
    assert "--max-queue 2" in str(error)


def test_a_request_waiting_past_its_deadline_gets_503_and_the_queue_moves_on() -> None:
    async def scenario() -> list[str]:
        admission, log = Admission(), []
        running = asyncio.ensure_future(_hold(admission, 0.3, log, "running"))
        await asyncio.sleep(0.01)
        start = time.monotonic()
        with pytest.raises(UnavailableError, match="deadline"):
            await _hold(admission, 0, log, "late", deadline_s=0.05)
        assert 0.04 < time.monotonic() - start < 0.25
        await running
        await _hold(admission, 0, log, "next")  # the model is free again
        return log

    assert asyncio.run(scenario()) == ["running runs", "next runs"]


def test_a_past_deadline_is_refused_before_waiting() -> None:
    async def scenario() -> None:
        with pytest.raises(UnavailableError, match="deadline"):
            await _hold(Admission(), 0, [], "x", deadline_s=-1)

    asyncio.run(scenario())


def test_stopping_serves_waiting_requests_until_the_drain_bound_then_answers_503() -> None:
    async def scenario() -> tuple[list[str], list[object]]:
        admission, log = Admission(), []
        running = asyncio.ensure_future(_hold(admission, 0.3, log, "running"))
        await asyncio.sleep(0.01)
        soon = asyncio.ensure_future(_hold(admission, 0.0, log, "queued"))
        chunk = asyncio.ensure_future(_hold(admission, 0.0, log, "next-chunk", started=True))
        await asyncio.sleep(0.01)
        start = time.monotonic()
        admission.close(drain_s=0.1)  # shorter than the running request's 0.3 s
        results = await asyncio.gather(running, soon, chunk, return_exceptions=True)
        assert time.monotonic() - start < 0.5
        return log, results

    log, results = asyncio.run(scenario())
    # The queued request could not start within the drain bound: 503. A later chunk of a
    # request that already ran keeps its turn: a started request always finishes.
    assert isinstance(results[1], UnavailableError) and "shutting down" in str(results[1])
    assert log == ["running runs", "next-chunk runs"]


def test_a_cancelled_waiter_does_not_take_a_turn_with_it() -> None:
    async def scenario() -> list[str]:
        admission, log = Admission(), []
        running = asyncio.ensure_future(_hold(admission, 0.05, log, "running"))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(_hold(admission, 0, log, "gone"))
        await asyncio.sleep(0.01)
        gone.cancel()
        await running
        await asyncio.wait_for(_hold(admission, 0, log, "after"), timeout=1)
        return log

    assert asyncio.run(scenario()) == ["running runs", "after runs"]


def test_the_client_timeout_can_only_shorten_the_servers() -> None:
    admission = Admission(timeout_s=2.0)
    now = time.monotonic()
    assert admission.deadline(0.5) - now == pytest.approx(0.5, abs=0.05)
    assert admission.deadline(60.0) - now == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("kwargs, message", [({"max_queue": 0}, "--max-queue"),
                                             ({"timeout_s": 0}, "--request-timeout")])
def test_bad_settings_are_config_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Admission(**kwargs)  # type: ignore[arg-type]
