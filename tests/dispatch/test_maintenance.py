"""The ``csjd_jobs`` gauge: unfinished states every tick, finished ones as they can afford."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest
from sqlalchemy import text

from app.core.errors import DatabaseUnavailable
from app.core.ids import uuid7
from app.core.job import TERMINAL, JobState, NewJob
from app.core.target import TargetSpec
from app.dispatch.maintenance import (
    FINISHED_COUNT_SHARE,
    MINUTES_KEPT_S,
    RESCUE_GRACE_S,
)
from app.metrics import Metrics
from app.settings import Settings
from app.storage.base import JobStore
from app.storage.counts import minute_of
from app.storage.engine import Conn
from app.storage.factory import build_store
from app.testing import FakeClock
from tests.dispatch.harness import maintenance_on

#: how long the fake count of the finished jobs takes
FINISHED_COUNT_S = 0.1


class SlowFinishedCounts:
    """The real store, whose count of finished jobs takes ``FINISHED_COUNT_S`` of fake time."""

    def __init__(self, store: JobStore, clock: FakeClock) -> None:
        self._store = store
        self._clock = clock
        self.finished_counts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def count_by_state(self, states: Collection[JobState]) -> dict[JobState, int]:
        if set(states) & TERMINAL:
            self.finished_counts += 1
            self._clock.advance(FINISHED_COUNT_S)
        return await self._store.count_by_state(states)


@pytest.fixture(autouse=True)
async def billing(store: JobStore) -> None:
    """The target these tests' jobs go to."""
    await store.put_target(TargetSpec(name="billing", url="http://x/hook"), 0.0)


async def enqueue(store: JobStore, key: str, now: float) -> str:
    job = NewJob(
        id=uuid7(),
        caller="",
        idempotency_key=key,
        fingerprint=key,
        target="billing",
        payload=b"{}",
        headers=None,
        max_attempts=None,
        next_attempt_at=now,
        expires_at=None,
        created_at=now,
    )
    return (await store.enqueue(job)).job.id


def gauge(metrics: Metrics, state: JobState) -> float:
    value = metrics.registry.get_sample_value("csjd_jobs", {"state": state.value})
    assert value is not None
    return value


async def test_finished_jobs_are_counted_again_once_their_last_count_is_paid_for(
    store: JobStore,
) -> None:
    clock = FakeClock()
    counting = SlowFinishedCounts(store, clock)
    metrics = Metrics()
    maintenance = maintenance_on(counting, clock, metrics=metrics, monotonic=clock.now)
    now = clock.now()
    await store.cancel("", await enqueue(store, "a", now), now)
    await enqueue(store, "b", now)

    await maintenance.tick(purge=False)
    assert (gauge(metrics, JobState.QUEUED), gauge(metrics, JobState.CANCELLED)) == (1, 1)

    await store.cancel("", await enqueue(store, "c", now), now)
    await enqueue(store, "d", now)
    pause = FINISHED_COUNT_S / FINISHED_COUNT_SHARE  # the count took 0.1 s: 5 s
    clock.advance(pause / 2)
    await maintenance.tick(purge=False)
    # the unfinished states are always fresh; the finished ones wait their turn
    assert (gauge(metrics, JobState.QUEUED), gauge(metrics, JobState.CANCELLED)) == (2, 1)
    assert counting.finished_counts == 1

    clock.advance(pause / 2)
    await maintenance.tick(purge=False)
    assert (gauge(metrics, JobState.QUEUED), gauge(metrics, JobState.CANCELLED)) == (2, 2)
    assert counting.finished_counts == 2


class OutageThenBack:
    """The real store, out of reach for one tick; counts the rescues it is asked for."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self.down = False
        self.rescues = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def try_lead(self, *args: Any) -> bool:
        if self.down:
            raise DatabaseUnavailable()
        result: bool = await self._store.try_lead(*args)
        return result

    async def rescue(self, *args: Any, **kwargs: Any) -> int:
        self.rescues += 1
        result: int = await self._store.rescue(*args, **kwargs)
        return result


async def test_a_leader_back_from_an_outage_waits_before_rescuing(store: JobStore) -> None:
    """Holders that lost the database too renew their leases first, once it is back."""
    flaky = OutageThenBack(store)
    clock = FakeClock()
    mono = [1000.0]
    maintenance = maintenance_on(flaky, clock, monotonic=lambda: mono[0])
    await maintenance.tick_guarded(purge=False)
    assert flaky.rescues == 1
    flaky.down = True
    await maintenance.tick_guarded(purge=False)  # the outage: logged, not raised
    flaky.down = False
    await maintenance.tick_guarded(purge=False)
    assert flaky.rescues == 1  # back, but within the grace
    mono[0] += RESCUE_GRACE_S
    await maintenance.tick_guarded(purge=False)
    assert flaky.rescues == 2


async def test_a_leader_that_stops_hands_the_duty_on_at_once(store: JobStore) -> None:
    clock = FakeClock()

    first, second = maintenance_on(store, clock), maintenance_on(store, clock)
    await first.tick(purge=False)
    await second.tick(purge=False)
    assert (first.leading, second.leading) == (True, False)
    await first.stop()
    assert not first.leading
    await second.tick(purge=False)  # well within the first's lease
    assert second.leading


async def test_the_leader_repairs_the_backlog_counts_and_forgets_old_minutes_once_a_minute(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On a real SQLite file, whose counts a hand changed: the purge tick (once a
    minute, and the first) counts the backlog again, says what it corrected, and
    forgets the minutes older than ``MINUTES_KEPT_S``; the ticks between do not."""
    store = build_store(Settings(database_url=db_url))
    await store.open()
    try:
        await store.put_target(TargetSpec(name="billing", url="http://x/hook"), 0.0)
        clock = FakeClock()
        now = clock.now()
        await enqueue(store, "old", now - MINUTES_KEPT_S - 60)
        await enqueue(store, "recent", now - 120)

        async def astray(conn: Conn) -> None:
            await conn.execute(text("UPDATE target_backlog SET count = 7"))

        await store.database.write(astray)
        maintenance = maintenance_on(store, clock, monotonic=clock.now)
        await maintenance.tick(purge=False)
        assert await store.backlog_by_target() == {"billing": {"queued": 7}}
        await maintenance.tick(purge=True)
        assert await store.backlog_by_target() == {"billing": {"queued": 2}}
        [repaired] = [r for r in caplog.records if r.getMessage() == "backlog_counts_repaired"]
        assert repaired.levelname == "WARNING"
        assert repaired.corrections == "billing/queued: -5"  # type: ignore[attr-defined]
        kept = await store.activity(0, now + 60)
        assert [(a.minute, a.accepted) for a in kept] == [(minute_of(now - 120), 1)]
    finally:
        await store.close()
