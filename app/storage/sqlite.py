"""SQLite for the ``SqlJobStore``: its engines, its dialect, and the one-gateway-per-file lock.

The writer is a single connection, used by a single thread, that begins every
transaction with ``BEGIN IMMEDIATE`` (so a write never fails half-way on a
lock upgrade); readers are a small pool of plain connections, one per reader
thread, which WAL lets read while the writer writes. Both go through
``sqlite3`` in threads, a whole unit of work per hop (``engine.py``). Every
connection gets WAL, ``busy_timeout``, foreign keys and the configured
``synchronous`` level.

A second gateway on the same file would break the single-writer assumptions
of the dispatcher, so ``DatabaseLock`` holds an exclusive ``flock`` on a file
beside the database for the life of the process and refuses to start
otherwise: one lock per duty (``api``, ``dispatcher``), so that one gateway
may also be split over two processes with ``--role``.

``SqliteDialect`` is SQLite's side of the store's ``Dialect`` (``dialect.py``):
with one writer at a time, its locking and waking hooks do nothing.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, Table, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from app.settings import Settings
from app.storage.dialect import Read
from app.storage.engine import Conn, ThreadedSqlite
from app.storage.models import ENGINE_JSON, targets
from app.storage.statements import TARGET_BY_NAME, upsert_target

#: within the store's retry budget (group.py), so a lock held by another process
#: longer than that is a 503 in seconds, not a writer stuck ten seconds a batch
BUSY_TIMEOUT_MS = 2_000
#: reader threads, each with its own connection (WAL lets them read while the writer writes)
READERS = 4
#: how long a migration waits for another one to finish
MIGRATION_WAIT_MS = 60_000


class DatabaseInUse(RuntimeError):
    """Another csjd gateway holds this database file."""


def sqlite_path(database_url: str) -> Path | None:
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite"):
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve()


class DatabaseLock:
    def __init__(self, database_url: str, duty: str = "dispatcher") -> None:
        path = sqlite_path(database_url)
        self.duty = duty
        self.path = None if path is None else path.with_name(f"{path.name}.{duty}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.path is None or self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DatabaseInUse(
                f"another csjd gateway (pid {holder}) is already the {self.duty} of "
                f"{self.path.parent / self.path.name.removesuffix(f'.{self.duty}.lock')}; "
                "one gateway per SQLite database file (or one per --role)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _configure(engine: Engine, synchronous: str, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # straight on the sqlite3 connection: SQLAlchemy's statement machinery
        # cost more than the BEGIN itself
        conn.connection.dbapi_connection.execute(begin)


def lock_for_migration(connection: Connection) -> None:
    """Keep other migrators out until this migration commits (``migrate.py``)."""
    # the write lock, held to the commit; without it each CREATE TABLE would
    # commit alone and a second migrator would trip over the first one's tables
    connection.exec_driver_sql(f"PRAGMA busy_timeout = {MIGRATION_WAIT_MS}")
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_database(settings: Settings) -> ThreadedSqlite:
    """The configured SQLite file through ``sqlite3`` in threads (see ``engine.py``)."""
    synchronous = settings.sqlite_synchronous.value
    url = make_url(settings.database_url).set(drivername="sqlite")
    # connections are made and used in the worker threads, one thread at a time each;
    # parameters hold secrets, header values and payloads: no error's text may show them
    options: dict[str, Any] = {
        "connect_args": {"check_same_thread": False},
        "poolclass": QueuePool,
        "hide_parameters": True,
        **ENGINE_JSON,
    }
    writer = create_engine(url, pool_size=1, max_overflow=0, **options)
    _configure(writer, synchronous, immediate=True)
    reader = create_engine(url, pool_size=READERS, max_overflow=0, **options)
    _configure(reader, synchronous, immediate=False)
    return ThreadedSqlite(writer, reader, readers=READERS)


# the upsert says nothing of which it did: upsert_target reads before it (see there)
_UPSERT_TARGET = upsert_target(sqlite.insert(targets)).returning(*targets.c)


class SqliteDialect:
    """SQLite's side of the store's ``Dialect``: one writer at a time.

    Every write transaction begins with ``BEGIN IMMEDIATE`` and holds the whole
    file until it ends, so no row is another writer's to skip or wait for, a
    read inside a write sees what the write will change, and nothing is locked
    or announced; this host's clock is the only one.
    """

    skip_locked = ""
    lock_row = ""

    def __init__(self, *, shared: bool = False) -> None:
        #: a gateway split over two processes (``--role``) shares its file
        self.shared = shared

    def unlocked_rows(self, where: str, *, limit: int | None = None) -> str:
        # the one writer takes them all: it holds no row lock a bound would shorten
        return where

    def counted_update(self, set_: str, where: str) -> tuple[str, ...]:
        # RETURNING may not name a FROM list here: counted just before, which the
        # one writer makes the very rows the UPDATE then writes
        return (
            f"SELECT target, state, count(*) FROM jobs WHERE {where} GROUP BY target, state",
            f"UPDATE jobs SET {set_} WHERE {where}",
        )

    def insert(self, table: Table) -> sqlite.Insert:
        return sqlite.insert(table)

    def values_rows(self, rows: int, types: Sequence[str], start: int = 1) -> str:
        """``(?, ?), (?, ?)``: positional, and SQLite needs no types."""
        return ", ".join(["(" + ", ".join("?" * len(types)) + ")"] * rows)

    def placeholder(self, n: int, type_: str) -> str:
        return "?"

    async def upsert_target(
        self, conn: Conn, parameters: Mapping[str, Any]
    ) -> tuple[RowMapping, bool]:
        # SQLite writes begin with BEGIN IMMEDIATE: no one else writes between
        # this read and the upsert
        before = (await conn.execute(TARGET_BY_NAME, {"name": parameters["name"]})).first()
        row = (await conn.execute(_UPSERT_TARGET, parameters)).mappings().one()
        return row, before is None

    async def hold_targets(
        self, conn: Conn, names: Collection[str]
    ) -> Mapping[str, RowMapping | None]:
        # no delete can come between: each target is read when first needed
        return {}

    async def lock_target_for_delete(self, conn: Conn, name: str) -> bool:
        return True  # BEGIN IMMEDIATE already keeps every other writer out

    async def claim_room(self, conn: Conn, target: str, wanted: int) -> int:
        # one dispatcher per file (DatabaseLock) keeps max_concurrency by itself
        return wanted

    async def notify_jobs(self, conn: Conn) -> None:
        # no channel in the database: a split gateway's API process wakes its
        # dispatcher itself (app/dispatch/wakeup.py)
        pass

    async def database_time(self, read: Read) -> float:
        return time.time()

    async def snapshot(self, conn: Conn) -> None:
        pass  # under WAL a read transaction sees one snapshot from its first read on
