"""The fault harness itself: each helper does what the tests built on it assume."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from app.core.ids import uuid7
from app.core.outcome import FailureKind
from app.dispatch.sender import AiohttpSender, Failure, Request, Response
from app.testing import Sink
from tests.faults.clock import faketime_env
from tests.faults.conftest import PostgresFactory, ReplicaFactory
from tests.faults.postgres import LOCK_WATCH, PrivatePostgres
from tests.faults.sqlite_lock import SqliteWriteLock
from tests.faults.targets import BINARY_BODY, Behaviour, HostileTarget

# -- a private Postgres ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_private_postgres_stops_and_starts_again_with_its_port_and_data(
    private_postgres_factory: PostgresFactory, mode: str
) -> None:
    pg = private_postgres_factory()
    url = pg.create_database("kept")
    database = url.rsplit("/", 1)[1]
    pg.query("CREATE TABLE t (n int)", database=database)
    pg.query("INSERT INTO t VALUES (42)", database=database)
    port = pg.port

    with pg.down(mode):
        assert not pg.running
        with pytest.raises(ConnectionRefusedError):
            pg.query("SELECT 1", timeout=2)

    assert pg.running and pg.port == port
    assert [row["n"] for row in pg.query("SELECT n FROM t", database=database)] == [42]


@pytest.mark.slow
def test_a_private_postgres_makes_migrated_databases(private_postgres: PrivatePostgres) -> None:
    url = private_postgres.migrated_database()
    assert url.startswith(f"postgresql+asyncpg://postgres@127.0.0.1:{private_postgres.port}/")
    tables = private_postgres.query(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
        database=url.rsplit("/", 1)[1],
    )
    assert {"jobs", "targets", "attempts", "alembic_version"} <= {r["tablename"] for r in tables}


@pytest.mark.slow
async def test_the_private_postgres_log_names_lock_waits_and_deadlocks(
    private_postgres_factory: PostgresFactory,
) -> None:
    pg = private_postgres_factory(LOCK_WATCH)
    assert (pg.lock_waits(), pg.deadlocks()) == ([], [])
    a = await asyncpg.connect(pg.dsn(), timeout=5)
    b = await asyncpg.connect(pg.dsn(), timeout=5)
    try:
        await a.execute(
            "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0), (2, 0)"
        )
        await a.execute("BEGIN; UPDATE t SET v = 1 WHERE id = 1")
        await b.execute("BEGIN; UPDATE t SET v = 2 WHERE id = 2")
        a_waits = asyncio.create_task(a.execute("UPDATE t SET v = 1 WHERE id = 2"))
        await wait_for(lambda: bool(pg.lock_waits()), timeout=10)
        # b closes the circle; one of the two is chosen as the victim
        results = await asyncio.wait_for(
            asyncio.gather(
                a_waits, b.execute("UPDATE t SET v = 2 WHERE id = 1"), return_exceptions=True
            ),
            timeout=10,
        )
        assert any(isinstance(r, asyncpg.DeadlockDetectedError) for r in results), results
    finally:
        await a.close(timeout=5)
        await b.close(timeout=5)
    assert "still waiting for ShareLock on transaction" in pg.lock_waits()[0]
    await wait_for(lambda: bool(pg.deadlocks()), timeout=10)
    await wait_for(lambda: pg.stat_deadlocks() == 1, timeout=10)


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        await asyncio.sleep(0.02)


# -- skewed clocks --------------------------------------------------------------------

_PROBE = """
import asyncio, json, time
async def slept():
    start = time.monotonic()
    await asyncio.sleep(0.2)
    return time.monotonic() - start
print(json.dumps({"time": time.time(), "monotonic": time.monotonic(),
                  "slept": asyncio.run(slept())}))
"""


@pytest.mark.parametrize("skew", [60, -60])
def test_faketime_skews_a_childs_wall_clock_and_leaves_its_timers_true(skew: int) -> None:
    env = {**os.environ, **faketime_env(skew)}
    before, mono_before = time.time(), time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=30
    )
    after, mono_after = time.time(), time.monotonic()
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stdout)
    assert before + skew - 1 <= child["time"] <= after + skew + 1
    # CLOCK_MONOTONIC is one clock for the whole machine: the child's reads inside ours
    assert mono_before <= child["monotonic"] <= mono_after
    assert 0.19 <= child["slept"] < 2


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "skew"), [("sqlite", 60), ("postgres", -60)])
def test_a_skewed_gateway_stamps_jobs_by_the_clock_it_trusts(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    replica_factory: ReplicaFactory,
    sink: Sink,
    backend: str,
    skew: int,
) -> None:
    """Alone on SQLite a gateway has only its own clock; on Postgres, where replicas
    compare each other's times, it keeps the database's, however wrong its own is."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'skewed.db'}"
    else:
        url = request.getfixturevalue("private_postgres").create_database()
    expected = skew if backend == "sqlite" else 0
    gateway = replica_factory(url, clock_skew_s=skew)
    gateway.start()
    gateway.put_target("t", url=sink.url("/hook"))
    before = time.time()
    job = gateway.post_job("k", "t", 1).json()
    after = time.time()
    created = datetime.fromisoformat(job["created_at"]).timestamp()
    assert before + expected - 1 <= created <= after + expected + 1
    gateway.wait_job(job["id"], ("succeeded",))
    # webhook-timestamp comes from the same clock
    stamp = int(sink.received("/hook")[0].headers["webhook-timestamp"])
    assert int(before) + expected - 1 <= stamp <= int(after) + expected + 1


# -- hostile targets ------------------------------------------------------------------


async def _send(url: str, webhook_id: str, timeout_s: float = 5) -> Response | Failure:
    sender = AiohttpSender(max_connections=4, allow_private=True)
    try:
        return await sender.send(
            Request(url=url, body=b"{}", headers={"webhook-id": webhook_id}, timeout_s=timeout_s)
        )
    finally:
        await sender.close()


@pytest.mark.parametrize("status", [200, 500])
async def test_the_binary_target_answers_nul_bytes_as_octet_stream(
    hostile_target: Callable[..., HostileTarget], status: int
) -> None:
    target = hostile_target(Behaviour.BINARY, status=status)
    job_id = uuid7()
    answer = await _send(target.url(), job_id)
    assert isinstance(answer, Response), answer
    assert answer.status == status
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.body == BINARY_BODY and b"\x00" in answer.body
    assert target.counts() == {job_id: 1}
    assert target.received()[0].path == "/hook"


async def test_the_garbage_target_answers_bytes_that_are_not_http(
    hostile_target: Callable[..., HostileTarget],
) -> None:
    target = hostile_target(Behaviour.GARBAGE)
    ids = [uuid7(), uuid7()]
    answers = [await _send(target.url(), job_id) for job_id in ids]
    assert all(
        isinstance(a, Failure) and a.kind is FailureKind.INVALID_RESPONSE for a in answers
    ), answers
    assert target.counts() == {ids[0]: 1, ids[1]: 1}


async def test_the_hanging_target_never_answers(
    hostile_target: Callable[..., HostileTarget],
) -> None:
    target = hostile_target(Behaviour.HANG)
    job_id = uuid7()
    start = time.monotonic()
    answer = await _send(target.url(), job_id, timeout_s=0.5)
    assert isinstance(answer, Failure) and answer.kind is FailureKind.TIMEOUT, answer
    assert 0.45 <= time.monotonic() - start < 5
    assert target.counts() == {job_id: 1}


# -- another SQLite writer ------------------------------------------------------------


def _database(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (n int)")
    return path


def _write(path: Path, n: int, timeout: float) -> None:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", (n,))
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_the_lock_holder_blocks_writers_until_released(
    tmp_path: Path, sqlite_write_lock: Callable[[Path, float], SqliteWriteLock]
) -> None:
    path = _database(tmp_path / "busy.db")
    holder = sqlite_write_lock(path, 60)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        _write(path, 1, timeout=0.2)
    with sqlite3.connect(path) as reader:  # WAL: readers go on
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)
    holder.release()
    _write(path, 2, timeout=0.2)


def test_the_lock_holder_lets_go_by_itself(tmp_path: Path) -> None:
    path = _database(tmp_path / "busy.db")
    with SqliteWriteLock(path, seconds=0.5) as holder:
        start = time.monotonic()
        _write(path, 1, timeout=10)  # waits its turn, as the gateway's busy_timeout does
        assert time.monotonic() - start >= 0.3
        assert holder.wait(10) == 0
