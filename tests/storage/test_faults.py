"""Database faults met by the store: what is run again, what fails alone, what is a 503.

Real faults on real databases: a second SQLite connection holding the write
lock, a Postgres backend terminated in the middle of a transaction, a row the
database refuses, a server that is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import exc as sa

from app.core import errors
from app.core.job import IllegalTransition, JobState
from app.core.target import TargetSpec
from app.settings import Settings
from app.storage.base import ClaimRequest
from app.storage.engine import Database
from app.storage.factory import build_store
from app.storage.faults import Fault, classify
from app.storage.sql import SqlJobStore
from tests.conftest import LockHolder
from tests.pg import ADMIN_URL, PostgresDatabases
from tests.storage.test_store_contract import (
    NOW,
    SUCCEEDED,
    assert_counts_exact,
    minutes,
    new_job,
    result,
)

# -- what each error means ------------------------------------------------------------


def _sqlite_error(cls: type[sqlite3.Error], code: int) -> sqlite3.Error:
    error = cls("said by SQLite")
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), Fault.TRANSIENT),
        (asyncpg.exceptions.SerializationError("could not serialize"), Fault.TRANSIENT),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), Fault.TRANSIENT),
        (asyncpg.exceptions.CannotConnectNowError("the database is starting up"), Fault.TRANSIENT),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), Fault.TRANSIENT),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"), Fault.TRANSIENT),  # failover
        (asyncpg.exceptions.InterfaceError("connection is closed"), Fault.TRANSIENT),
        (asyncpg.exceptions.InterfaceError("the server expects 2 arguments"), Fault.BUG),
        (asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte 0x00"), Fault.REFUSED),
        (asyncpg.exceptions.NotNullViolationError("null value"), Fault.REFUSED),
        (asyncpg.exceptions.UndefinedColumnError("no such column"), Fault.BUG),
        (_sqlite_error(sqlite3.OperationalError, 5), Fault.TRANSIENT),  # SQLITE_BUSY
        (_sqlite_error(sqlite3.OperationalError, 6), Fault.TRANSIENT),  # SQLITE_LOCKED
        (_sqlite_error(sqlite3.OperationalError, 517), Fault.TRANSIENT),  # BUSY_SNAPSHOT
        (_sqlite_error(sqlite3.IntegrityError, 1299), Fault.REFUSED),  # NOT NULL
        (_sqlite_error(sqlite3.OperationalError, 1), Fault.BUG),  # a wrong statement
        (ConnectionRefusedError(111, "refused"), Fault.TRANSIENT),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_errors_are_read_by_what_they_mean(error: BaseException, fault: Fault) -> None:
    # as the driver raises it, and as SQLAlchemy wraps it
    assert classify(error) is fault
    wrapped = sa.DBAPIError("SELECT 1", {}, error)  # type: ignore[arg-type]
    assert classify(wrapped) is fault


def test_an_error_that_is_not_the_databases_is_a_bug() -> None:
    assert classify(ValueError("nope")) is Fault.BUG


# -- SQLite: a second process holds the write lock ---------------------------------------


@pytest.fixture
async def sqlite_store(db_url: str, quick_busy: None) -> AsyncIterator[SqlJobStore]:
    s = build_store(Settings(database_url=db_url, max_backlog=1000))
    await s.open()
    await s.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
    yield s
    await s.close()


async def test_a_write_waits_out_a_short_lock_held_by_another_process(
    sqlite_store: SqlJobStore, sqlite_lock_holder: LockHolder
) -> None:
    sqlite_lock_holder(1.0)
    enqueued = await sqlite_store.enqueue(new_job("a"))
    assert not enqueued.replayed
    assert sqlite_store.committer.transient_errors >= 1  # SQLITE_BUSY, then run again
    assert await sqlite_store.get_job("", enqueued.job.id) is not None


async def test_a_lock_held_past_the_retries_is_a_503_then_writes_resume(
    sqlite_store: SqlJobStore, sqlite_lock_holder: LockHolder
) -> None:
    sqlite_lock_holder(4.5)
    started = time.monotonic()
    with pytest.raises(errors.DatabaseUnavailable) as info:
        await sqlite_store.enqueue(new_job("a"))
    assert info.value.status == 503 and info.value.retry_after_s
    assert time.monotonic() - started < 4.5  # answered within the retry budget
    deadline = time.monotonic() + 10
    while True:  # once the lock is gone, the same request is stored
        try:
            enqueued = await sqlite_store.enqueue(new_job("a"))
            break
        except errors.DatabaseUnavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert not enqueued.replayed


# -- a refused row fails alone -------------------------------------------------------------


async def test_a_row_the_database_refuses_fails_only_its_own_request(backend_url: str) -> None:
    store = build_store(Settings(database_url=backend_url, max_backlog=1000))
    await store.open()
    try:
        await store.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
        good = [new_job(f"good-{i}") for i in range(20)]
        bad = new_job("bad", fingerprint=None)  # NOT NULL: refused by either database
        results = await asyncio.gather(
            *(store.enqueue(job) for job in [*good[:10], bad, *good[10:]]),
            return_exceptions=True,
        )
        refused = results.pop(10)
        assert isinstance(refused, errors.RefusedByDatabase)
        assert refused.status == 422
        assert all(not isinstance(r, BaseException) for r in results), results
        for job in good:
            assert await store.get_job("", job.id) is not None
        assert await store.get_job("", bad.id) is None
        assert store.active == 20
    finally:
        await store.close()


# -- Postgres: a connection terminated mid-transaction; a server that is not there ---------


async def _admin(sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@pytest.fixture
def pg_url(postgres: PostgresDatabases) -> str:
    return postgres.fresh()


async def test_a_transaction_cut_by_a_terminated_connection_is_run_again(pg_url: str) -> None:
    url = pg_url
    database = url.rsplit("/", 1)[1]
    store = build_store(Settings(database_url=url, max_backlog=1000))
    await store.open()
    blocker = await asyncpg.connect(ADMIN_URL.rsplit("/", 1)[0] + "/" + database)
    try:
        await store.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
        # hold the target's row so that the next write to it waits, mid-transaction
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT * FROM targets WHERE name = 'billing' FOR UPDATE")
        write = asyncio.create_task(
            store.put_target(TargetSpec(name="billing", url="http://y/hook"), NOW + 1)
        )
        deadline = time.monotonic() + 10
        waiting: list[asyncpg.Record] = []
        while not waiting:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
            waiting = await _admin(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                database,
            )
        await _admin("SELECT pg_terminate_backend($1)", waiting[0]["pid"])
        await blocker.execute("ROLLBACK")
        target, created = await asyncio.wait_for(write, 10)
        assert (target.spec.url, created) == ("http://y/hook", False)
        assert store.committer.transient_errors >= 1
    finally:
        await blocker.close()
        await store.close()


async def test_a_postgres_server_that_is_not_there_is_database_unavailable() -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"  # the discard port: refused
    store = build_store(Settings(database_url=url, max_backlog=1000))
    started = time.monotonic()
    with pytest.raises(errors.DatabaseUnavailable):
        await store.open()  # counts the backlog: a write
    with pytest.raises(errors.DatabaseUnavailable):
        await store.get_job("", "x")
    with pytest.raises(errors.DatabaseUnavailable):
        await store.ping()
    assert time.monotonic() - started < 10
    await store.close()


async def test_a_missing_sqlite_directory_is_not_a_driver_error(tmp_path: Path) -> None:
    store = build_store(
        Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    )
    with pytest.raises(errors.DatabaseUnavailable):
        await store.open()
    await store.close()


# -- Postgres: deleting a target while another replica takes jobs for it -------------------


@pytest.mark.alone
async def test_a_delete_racing_intake_on_another_replica_never_strands_a_job(
    pg_url: str,
) -> None:
    """Two stores on one database stand for two replicas: one deletes and puts the
    target back again and again while the other takes jobs for it. Every job
    stored names a target that exists, and every refusal is a 409 or a 422."""
    settings = Settings(database_url=pg_url, max_backlog=100_000)
    admin, intake = build_store(settings), build_store(settings)
    await admin.open()
    await intake.open()
    spec = TargetSpec(name="billing", url="http://x/hook")
    try:
        await admin.put_target(spec, NOW)
        stop = asyncio.Event()
        outcomes: dict[str, int] = {}

        async def churn() -> None:
            while not stop.is_set():
                try:
                    await admin.delete_target("billing")
                    outcomes["deleted"] = outcomes.get("deleted", 0) + 1
                    await admin.put_target(spec, NOW)
                except errors.Conflict as exc:
                    outcomes[str(exc.status)] = outcomes.get(str(exc.status), 0) + 1

        async def deliver() -> None:
            # what dispatchers do: jobs finish at once, so the target is often free
            # (first counting the unfinished jobs whose target is gone: stranded)
            while not stop.is_set():
                [(n,)] = await _admin_db(pg_url, _STRANDED)
                outcomes["stranded"] = outcomes.get("stranded", 0) + n
                await _admin_db(
                    pg_url, "UPDATE jobs SET state = 'succeeded' WHERE state = 'queued'"
                )

        async def produce(p: int, n: int) -> None:
            for i in range(n):
                try:
                    await intake.enqueue(new_job(f"k-{p}-{i}"))
                except errors.UnknownTarget:
                    outcomes["422"] = outcomes.get("422", 0) + 1

        background = [asyncio.create_task(churn()), asyncio.create_task(deliver())]
        await asyncio.gather(*(produce(p, 100) for p in range(8)))
        stop.set()
        await asyncio.gather(*background)
        assert outcomes.get("deleted", 0) > 0, outcomes
        [(n,)] = await _admin_db(pg_url, _STRANDED)
        assert outcomes.get("stranded", 0) + n == 0, outcomes
    finally:
        await admin.close()
        await intake.close()


async def test_a_delete_does_not_wait_for_intake_that_holds_the_target(pg_url: str) -> None:
    store = build_store(Settings(database_url=pg_url, max_backlog=1000))
    await store.open()
    holder = await asyncpg.connect(_plain(pg_url))
    try:
        await store.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
        await holder.execute("BEGIN")
        # what an intake transaction holds until its jobs are committed
        await holder.execute("SELECT 1 FROM targets WHERE name = 'billing' FOR KEY SHARE")
        with pytest.raises(errors.Conflict) as info:
            await asyncio.wait_for(store.delete_target("billing"), 5)
        assert info.value.retry_after_s
        await holder.execute("ROLLBACK")
        await store.delete_target("billing")
    finally:
        await holder.close()
        await store.close()


_STRANDED = (
    "SELECT count(*) FROM jobs j WHERE j.state IN ('scheduled', 'queued', 'running', 'retrying') "
    "AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.name = j.target)"
)


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin_db(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(_plain(url))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


# -- a commit whose answer was lost: the batch runs again --------------------------------


class AnswerLostOnce:
    """A database whose next write commits, then fails as if the connection had
    dropped before the server's answer came back (a commit in doubt)."""

    def __init__(self, inner: Database) -> None:
        self.inner = inner
        self.armed = False

    @property
    def dialect(self) -> Any:
        return self.inner.dialect

    @property
    def writes_in_thread(self) -> bool:
        return self.inner.writes_in_thread

    async def write(self, unit: Any) -> Any:
        result = await self.inner.write(unit)
        if self.armed:
            self.armed = False
            raise ConnectionResetError(104, "connection reset by peer")
        return result

    async def read(self, unit: Any) -> Any:
        return await self.inner.read(unit)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
async def in_doubt(backend_url: str) -> AsyncIterator[tuple[SqlJobStore, AnswerLostOnce]]:
    plain = build_store(Settings(database_url=backend_url, max_backlog=1000))
    database = AnswerLostOnce(plain.database)
    store = SqlJobStore(database, plain.dialect, max_backlog=1000)
    await store.open()
    await store.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
    yield store, database
    await store.close()


async def test_a_claim_whose_commit_was_in_doubt_returns_what_it_claimed(
    in_doubt: tuple[SqlJobStore, AnswerLostOnce],
) -> None:
    store, database = in_doubt
    first = (await store.enqueue(new_job("a"))).job
    second = (await store.enqueue(new_job("b"))).job
    database.armed = True
    claimed = await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 30})
    assert [job.id for job in claimed] == [first.id]
    assert claimed[0].delivery == 1
    # the other job was not claimed by the second run
    assert (await store.get_job("", second.id)).state is JobState.QUEUED  # type: ignore[union-attr]


async def test_a_job_whose_commit_was_in_doubt_is_answered_as_new(
    in_doubt: tuple[SqlJobStore, AnswerLostOnce],
) -> None:
    store, database = in_doubt
    database.armed = True
    enqueued = await store.enqueue(new_job("a"))
    assert not enqueued.replayed
    assert store.active == 1


# -- errors that are not the database's to retry ------------------------------------------


async def test_a_value_postgres_cannot_hold_in_a_read_is_a_bad_request(pg_url: str) -> None:
    store = build_store(Settings(database_url=pg_url))
    await store.open()
    try:
        with pytest.raises(errors.BadRequest):
            await store.get_job("", "nul\x00id")
    finally:
        await store.close()


async def test_an_operation_that_fails_for_itself_fails_alone(
    backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poison operation whose error reads as transient: once the retries are spent
    and the database still answers, each operation runs alone, and only the poison
    one fails."""
    monkeypatch.setattr("app.storage.group.TRANSIENT_BUDGET_S", 0.2)
    store = build_store(Settings(database_url=backend_url, max_backlog=1000))
    await store.open()
    try:
        await store.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)

        async def poison(tx: Any) -> None:
            raise ConnectionResetError(104, "not really the connection")

        results = await asyncio.gather(
            store.committer.run(poison),
            *(store.enqueue(new_job(f"k{i}")) for i in range(5)),
            return_exceptions=True,
        )
        assert isinstance(results[0], errors.DatabaseUnavailable)
        assert all(not isinstance(r, BaseException) for r in results[1:]), results
    finally:
        await store.close()


async def test_a_cancel_whose_commit_was_in_doubt_answers_the_cancelled_job(
    in_doubt: tuple[SqlJobStore, AnswerLostOnce],
) -> None:
    store, database = in_doubt
    job = (await store.enqueue(new_job("a"))).job
    database.armed = True
    cancelled = await store.cancel("", job.id, NOW + 1)
    assert cancelled.state is JobState.CANCELLED
    assert store.active == 0
    # a later cancel of the same job is still refused
    with pytest.raises(errors.Conflict):
        await store.cancel("", job.id, NOW + 2)


async def test_counts_stay_exact_through_every_write_whose_commit_was_in_doubt(
    in_doubt: tuple[SqlJobStore, AnswerLostOnce],
) -> None:
    """The batch runs again after its commit: what the first run counted, the
    second finds done and counts again nowhere."""
    store, database = in_doubt
    rng = random.Random(1).random

    async def in_doubt_(write: Awaitable[Any]) -> None:
        database.armed = True
        # a retry run again finds its job queued already, and says so
        with contextlib.suppress(IllegalTransition):
            await write
        assert not database.armed
        await assert_counts_exact(store)

    await in_doubt_(store.enqueue(new_job("a", next_attempt_at=NOW - 3)))
    await in_doubt_(store.enqueue(new_job("b", next_attempt_at=NOW - 2)))
    await in_doubt_(store.enqueue(new_job("lost", next_attempt_at=NOW - 1, max_attempts=1)))
    await in_doubt_(store.enqueue(new_job("later", next_attempt_at=NOW + 60)))
    await in_doubt_(
        store.enqueue(new_job("expiring", next_attempt_at=NOW + 80, expires_at=NOW + 90))
    )
    a, b = await store.claim([ClaimRequest(target="billing", limit=2)], NOW, {"billing": 30})
    await in_doubt_(store.complete(result(a, SUCCEEDED)))
    await in_doubt_(store.cancel("", b.id, NOW + 2))
    await in_doubt_(store.retry("", a.id, NOW + 3))
    await in_doubt_(store.claim([], NOW + 60, {}))  # promotes "later"
    await in_doubt_(store.fail_expired(NOW + 95))
    await in_doubt_(
        store.claim([ClaimRequest(target="billing", limit=5)], NOW + 96, {"billing": 1})
    )
    await in_doubt_(store.rescue(NOW + 200, rng))  # "lost" fails, the others wait to retry
    assert await store.backlog_by_target() == {"billing": {"retrying": 2}}
    assert minutes(await store.activity(NOW, NOW + 300)) == {
        ("billing", NOW): (5, 1, 0),
        ("billing", NOW + 60): (0, 0, 1),
        ("billing", NOW + 180): (0, 0, 1),
    }
