"""The claim loop: bounded concurrency, waking, leases kept alive, and the drain."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.core.job import JobState
from app.core.outcome import Outcome
from app.dispatch.timings import Timings
from app.testing import FakeClock, FakeSender
from tests.dispatch.conftest import Start
from tests.dispatch.harness import HangingSender, eventually


async def test_concurrency_is_bounded_per_target_and_overall(start: Start) -> None:
    sender = HangingSender()
    h = await start(sender=sender, max_inflight=5)
    await h.put_target("slow", url="http://127.0.0.1:9/slow", max_concurrency=3)
    await h.put_target("other", url="http://127.0.0.1:9/other", max_concurrency=10)
    for i in range(10):
        await h.enqueue(f"s{i}", target="slow", payload=str(i).encode())
        await h.enqueue(f"o{i}", target="other", payload=str(i).encode())
    await eventually(lambda: sender.inflight == 5)
    await asyncio.sleep(0.1)  # no more may start while all slots are taken
    assert sender.inflight == 5
    assert sender.by_url["http://127.0.0.1:9/slow"] <= 3
    assert sender.by_url["http://127.0.0.1:9/other"] >= 2  # the slow one did not take it all
    sender.release.set()
    await eventually(lambda: len(sender.requests) == 20)
    assert sender.peak == 5


async def test_a_sleeping_loop_claims_at_once_when_woken(start: Start) -> None:
    sender = FakeSender()
    # a poll far longer than the test: only the wake can make it claim in time
    h = await start(sender=sender, timings=Timings(idle_poll_s=3600.0))
    await h.put_target()
    await h.enqueue("warm")  # the loop now sleeps with the long poll
    await eventually(lambda: len(sender.requests) == 1)
    job = await h.enqueue("k")
    await h.wait_for_job(job.id, lambda j: j.state is JobState.SUCCEEDED, timeout=5)


async def test_drain_puts_unfinished_attempts_back_without_counting(start: Start) -> None:
    sender = HangingSender()
    h = await start(sender=sender)
    await h.put_target()
    job = await h.enqueue()
    await eventually(lambda: sender.inflight == 1)
    await h.dispatcher.stop(drain_timeout_s=0.2)
    back = await h.job(job.id)
    assert (back.state, back.attempts) == (JobState.QUEUED, 0)
    assert [a.outcome for a in await h.attempts(job.id)] == [Outcome.INTERRUPTED]


async def test_the_drain_runs_once_on_the_clock_of_the_first_stop(start: Start) -> None:
    """serve begins the drain when the listener closes; the lifespan's stop later
    waits for that one instead of granting the deliveries a second drain."""
    sender = HangingSender()
    h = await start(sender=sender)
    await h.put_target()
    job = await h.enqueue()
    await eventually(lambda: sender.inflight == 1)
    started = time.monotonic()
    h.dispatcher.begin_stop(0.2)
    async with asyncio.timeout(5):  # far less than the 60 s this call would grant
        await h.dispatcher.stop(drain_timeout_s=60)
    assert time.monotonic() - started < 5
    back = await h.job(job.id)
    assert (back.state, back.attempts) == (JobState.QUEUED, 0)


async def test_a_long_attempt_keeps_its_lease_alive(start: Start) -> None:
    sender, clock = HangingSender(), FakeClock()
    h = await start(sender=sender, clock=clock, timings=Timings(heartbeat_s=0.05))
    await h.put_target(timeout_s=300)
    job = await h.enqueue()
    await eventually(lambda: sender.inflight == 1)
    first = (await h.job(job.id)).lease_expires_at
    assert first is not None
    clock.advance(100)  # far past the 30 s lease the claim gave it

    async def lease_now() -> float:
        return (await h.job(job.id)).lease_expires_at or 0.0

    deadline = time.monotonic() + 5
    while await lease_now() <= first:
        assert time.monotonic() < deadline, "the lease was never extended"
        await asyncio.sleep(0.01)
    assert await lease_now() == pytest.approx(clock.now() + 30)
    sender.release.set()
    await h.wait_for_job(job.id, lambda j: j.state is JobState.SUCCEEDED)
