"""The database's clock: replicas whose own clocks disagree read one time."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.settings import Settings
from app.storage.clock import DatabaseClock
from app.storage.factory import build_store
from tests.conftest import ApiFactory
from tests.pg import PostgresDatabases


async def test_the_offset_is_the_database_time_minus_the_local_time() -> None:
    async def sixty_seconds_ahead() -> float:
        await asyncio.sleep(0.001)
        return time.time() + 60.0

    clock = DatabaseClock(sixty_seconds_ahead)
    assert not clock.synced
    await clock.sync()
    assert clock.synced
    assert clock.offset == pytest.approx(60.0, abs=0.05)
    assert clock.now() - time.time() == pytest.approx(60.0, abs=0.05)


async def test_the_quietest_round_trip_is_the_one_believed() -> None:
    # the first reading is late by a slow answer; the others are prompt
    delays = iter([0.2, 0.0, 0.0])

    async def reader() -> float:
        read_at = time.time()
        await asyncio.sleep(next(delays))
        return read_at - 30.0

    clock = DatabaseClock(reader)
    await clock.sync()
    assert clock.offset == pytest.approx(-30.0, abs=0.02)


async def test_a_failed_reading_keeps_the_last_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    failures = 0

    async def reader() -> float:
        nonlocal failures
        if clock.synced:
            failures += 1
            raise ConnectionRefusedError()
        return time.time() + 5.0

    clock = DatabaseClock(reader)
    await clock.sync()
    monkeypatch.setattr("app.storage.clock.SYNC_EVERY_S", 0.01)
    task = asyncio.create_task(clock.keep_synced())
    deadline = time.monotonic() + 5
    while failures < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert not task.done()  # a failed reading does not end the loop
    task.cancel()
    assert clock.offset == pytest.approx(5.0, abs=0.05)


@pytest.fixture
def pg_url(postgres: PostgresDatabases) -> str:
    return postgres.fresh()


async def test_postgres_tells_its_own_time(pg_url: str) -> None:
    store = build_store(Settings(database_url=pg_url))
    await store.open()
    try:
        before = time.time()
        told = await store.database_time()
        after = time.time()
        # the same machine: the server's clock is this one, within the round trip
        assert before - 0.05 <= told <= after + 0.05
    finally:
        await store.close()


async def test_a_gateway_on_postgres_keeps_the_databases_time(
    api_factory: ApiFactory, pg_url: str
) -> None:
    api = await api_factory(database_url=pg_url)
    clock = api.gateway.clock
    assert isinstance(clock, DatabaseClock) and clock.synced
    assert api.gateway.dispatcher._clock is clock  # leases and schedules read it too


async def test_a_step_of_the_local_wall_clock_does_not_move_the_database_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def reader() -> float:
        return 1_900_000_000.0

    clock = DatabaseClock(reader)
    await clock.sync()
    before = clock.now()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # NTP stepped the clock an hour
    assert clock.now() == pytest.approx(before, abs=0.5)
