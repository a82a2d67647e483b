"""What only the SQL store has, on real SQLite files and Postgres: the database's
own constraints, its engine and connections, group commit, the one-gateway lock.

Everything a store does through its public methods is in the contract
(``test_store_contract.py``), run against every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.core import errors
from app.core.job import Event, JobState
from app.core.target import TargetSpec
from app.settings import Settings
from app.storage.base import ClaimRequest, JobFilter
from app.storage.engine import Conn
from app.storage.factory import build_store
from app.storage.models import targets
from app.storage.sql import SqlJobStore
from app.storage.sqlite import DatabaseInUse, DatabaseLock
from tests.storage.test_store_contract import (
    HEADER_VALUE,
    NOW,
    RESULTS,
    SECRET,
    SUCCEEDED,
    assert_counts_exact,
    new_job,
    result,
)


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[SqlJobStore]:
    s = build_store(Settings(database_url=backend_url, max_backlog=1000))
    await s.open()
    await s.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
    yield s
    await s.close()


async def test_the_database_itself_refuses_a_second_row_for_a_key(store: SqlJobStore) -> None:
    await store.enqueue(new_job("k"))

    async def insert_same_key(conn: Conn) -> None:
        await conn.execute(
            text(
                "INSERT INTO jobs (id, caller, idempotency_key, fingerprint, target, payload,"
                " state, attempts, deliveries, max_attempts, created_at, updated_at,"
                " expires_at) VALUES ('x', '', 'k', 'f', 'billing', :p, 'queued', 0, 0, 1,"
                " 0, 0, 0)"
            ),
            {"p": b"\x00"},
        )

    with pytest.raises(IntegrityError):
        await store.database.write(insert_same_key)


async def test_two_stores_putting_one_new_target_at_once_create_it_once(backend_url: str) -> None:
    """Two replicas loading one targets file: the database, not a read, decides who
    created each target, and the other replaces it instead of failing."""
    a = build_store(Settings(database_url=backend_url, max_backlog=1000))
    b = build_store(Settings(database_url=backend_url, max_backlog=1000))
    await a.open()
    await b.open()
    try:
        for i in range(10):
            spec = TargetSpec(name=f"race-{i}", url="http://x/hook", secret=SECRET)
            # the same clock reading on both: creation is not told from created_at
            results = await asyncio.gather(a.put_target(spec, NOW), b.put_target(spec, NOW))
            assert sorted(is_new for _, is_new in results) == [False, True]
    finally:
        await a.close()
        await b.close()


async def test_database_errors_show_no_parameters(store: SqlJobStore) -> None:
    """Parameters hold secrets, header values and payloads: an error's text, and so
    any traceback in a log, must not."""

    async def insert_twice(conn: Conn) -> None:
        await conn.execute(
            insert(targets).values(
                name="billing",
                url="http://x/hook",
                timeout_s=10,
                max_concurrency=1,
                max_attempts=1,
                backoff_initial_s=1,
                backoff_max_s=1,
                max_retry_duration_s=1,
                secret=SECRET,
                headers={"authorization": HEADER_VALUE},
                enabled=True,
                created_at=NOW,
                updated_at=NOW,
            )
        )

    async def read_missing(conn: Conn) -> None:
        await conn.execute(text("SELECT :secret FROM no_such_table"), {"secret": SECRET})

    with pytest.raises(IntegrityError) as written:
        await store.database.write(insert_twice)
    with pytest.raises(DBAPIError) as read:
        await store.database.read(read_missing)
    for caught in (written, read):
        shown = "".join(traceback.format_exception(caught.value))
        assert "INSERT INTO targets" in shown or "no_such_table" in shown
        assert SECRET not in shown and HEADER_VALUE not in shown


async def test_many_producers_share_few_transactions(store: SqlJobStore) -> None:
    before = store.committer.batches
    await asyncio.gather(*(store.enqueue(new_job(f"k{i}")) for i in range(300)))
    assert store.committer.batches - before < 30
    assert store.active == 300


async def test_a_batch_is_one_transaction_however_many_jobs(store: SqlJobStore) -> None:
    before = store.committer.batches
    answers = await store.enqueue_many([new_job(f"k{i}") for i in range(1000)])
    assert len(answers) == 1000
    assert store.committer.batches - before == 1
    assert store.active == 1000


def test_a_second_gateway_on_the_same_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"
    first = DatabaseLock(url)
    first.acquire()
    try:
        with pytest.raises(DatabaseInUse, match="another csjd gateway"):
            DatabaseLock(url).acquire()
    finally:
        first.release()
    again = DatabaseLock(url)
    again.acquire()  # free again once the first one let go
    again.release()


@pytest.mark.parametrize(("level", "code"), [("FULL", 2), ("NORMAL", 1)])
async def test_connections_use_wal_and_the_configured_synchronous_level(
    db_url: str, level: str, code: int
) -> None:
    from sqlalchemy import text

    s = build_store(Settings(database_url=db_url, sqlite_synchronous=level))  # type: ignore[arg-type]
    await s.open()
    try:

        async def pragmas(conn: Conn) -> list[object]:
            names = ("journal_mode", "synchronous", "busy_timeout")
            return [(await conn.execute(text(f"PRAGMA {n}"))).scalar() for n in names]

        assert await s.database.read(pragmas) == ["wal", code, 2_000]
        assert await s.database.write(pragmas) == ["wal", code, 2_000]
    finally:
        await s.close()


async def test_a_unit_of_work_that_suspends_fails_loudly_and_writes_nothing(
    backend_url: str,
) -> None:
    """On SQLite a unit runs in a worker thread without an event loop: it may await
    only its connection. Anything else is a bug, and must not half-commit."""
    from app.storage.engine import UnitSuspended

    s = build_store(Settings(database_url=backend_url))
    await s.open()
    try:
        await s.put_target(TargetSpec(name="t", url="http://127.0.0.1:9/"), NOW)

        async def suspends(conn: Conn) -> None:
            await conn.execute(text("DELETE FROM targets"))
            await asyncio.sleep(0)

        if s.database.dialect.name == "sqlite":
            with pytest.raises(UnitSuspended):
                await s.database.write(suspends)
        else:  # natively asynchronous: the same unit is simply fine there
            await s.database.write(suspends)
            await s.put_target(TargetSpec(name="t", url="http://127.0.0.1:9/"), NOW)
        assert [t.name for t in await s.list_targets()] == ["t"]
    finally:
        await s.close()


# -- the per-target counts (app/storage/counts.py) ----------------------------------------


async def test_a_backlog_written_around_the_store_is_repaired_from_the_jobs(
    store: SqlJobStore,
) -> None:
    for i in range(3):
        await store.enqueue(new_job(f"k{i}"))

    async def around(conn: Conn) -> None:
        # jobs written by hand, and counts gone astray
        await conn.execute(
            text(
                "INSERT INTO jobs (id, caller, idempotency_key, fingerprint, target, payload,"
                " state, attempts, deliveries, max_attempts, created_at, updated_at,"
                " next_attempt_at, expires_at) VALUES ('by-hand', '', 'by-hand', 'f', 'billing',"
                " :p, 'scheduled', 0, 0, 1, 0, 0, 9e9, 9e9)"
            ),
            {"p": b"{}"},
        )
        await conn.execute(text("UPDATE target_backlog SET count = count + 5"))
        await conn.execute(
            text("INSERT INTO target_backlog (target, state, count) VALUES ('ghost', 'queued', 2)")
        )

    await store.database.write(around)
    assert await store.backlog_by_target() == {"billing": {"queued": 8}, "ghost": {"queued": 2}}
    assert await store.repair_backlog() == {
        ("billing", "queued"): -5,
        ("billing", "scheduled"): 1,
        ("ghost", "queued"): -2,
    }
    await assert_counts_exact(store)
    assert await store.backlog_by_target() == {"billing": {"queued": 3, "scheduled": 1}}


async def test_replicas_moving_jobs_at_once_keep_the_counts_exact(backend_url: str) -> None:
    """Two stores on one database, each taking in, claiming, finishing, cancelling
    and expiring jobs at once: the counts are the jobs' own after (on Postgres,
    also no deadlock: every writer takes the counts' rows in one order)."""
    replicas = [build_store(Settings(database_url=backend_url, max_backlog=10_000)) for _ in "ab"]
    for replica in replicas:
        await replica.open()
    try:
        for name in ("billing", "search"):
            await replicas[0].put_target(TargetSpec(name=name, url="http://x/hook"), NOW)
        results = [SUCCEEDED, RESULTS[Event.RETRY], RESULTS[Event.FAILED], RESULTS[Event.REQUEUE]]

        async def work(replica: SqlJobStore, r: int) -> None:
            for round_ in range(8):
                await asyncio.gather(
                    *(
                        replica.enqueue(
                            new_job(
                                f"{r}-{round_}-{i}",
                                target=("billing", "search")[i % 2],
                                next_attempt_at=NOW + (60 if i % 5 == 0 else 0),
                                expires_at=NOW + 30 if i % 7 == 0 else None,
                            )
                        )
                        for i in range(20)
                    )
                )
                claimed = await replica.claim(
                    [ClaimRequest(target=t, limit=8) for t in ("billing", "search")],
                    NOW + round_,
                    {"billing": 30, "search": 30},
                )
                await asyncio.gather(
                    *(
                        replica.complete(result(job, results[i % len(results)], at=NOW + round_))
                        for i, job in enumerate(claimed)
                    )
                )
                listed = await replica.list_jobs(
                    JobFilter(state=JobState.QUEUED), limit=3, before_id=None
                )
                for job in listed:
                    with contextlib.suppress(errors.Conflict):
                        await replica.cancel(None, job.id, NOW + round_)
                await replica.fail_expired(NOW + 4 * round_)
                await replica.claim([], NOW + 60, {})  # the scheduled ones come due

        await asyncio.gather(*(work(replica, r) for r, replica in enumerate(replicas)))
        await assert_counts_exact(replicas[1])
        assert sum(a.accepted for a in await replicas[0].activity(0, NOW + 3600)) == 320
    finally:
        for replica in replicas:
            await replica.close()
