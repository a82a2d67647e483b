"""What only the SQL store has, on real SQLite files and Postgres: the database's
own constraints, its engine and connections, group commit, the one-gateway lock.

Everything a store does through its public methods is in the contract
(``test_store_contract.py``), run against every backend.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.core.target import TargetSpec
from app.settings import Settings
from app.storage.engine import Conn
from app.storage.factory import build_store
from app.storage.models import targets
from app.storage.sql import SqlJobStore
from app.storage.sqlite import DatabaseInUse, DatabaseLock
from tests.storage.test_store_contract import HEADER_VALUE, NOW, SECRET, new_job


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
