"""Postgres for the ``SqlJobStore``: its engines, its dialect, and the wake-up channel.

Several gateways may share one Postgres database. Writes still go through a
group committer per process (one transaction per batch); reads use their own
pool. Both pools ping connections before use, so a database restart costs
the requests that were under way, not the gateway.

Replicas wake each other with ``NOTIFY csjd_jobs`` from the intake
transaction (once per batch) and a ``LISTEN`` connection in every replica;
polling remains the fallback.

``PostgresDialect`` is Postgres's side of the store's ``Dialect``
(``dialect.py``): the row locks, advisory locks and NOTIFY that let replicas
write at once, and the server's clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy import Boolean, Connection, RowMapping, Table, bindparam, literal_column, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.settings import Settings
from app.storage.dialect import Read
from app.storage.engine import AsyncDatabase, Conn
from app.storage.models import ENGINE_JSON, targets
from app.storage.statements import upsert_target

log = logging.getLogger("csjd.storage")

CHANNEL = "csjd_jobs"


#: a server that stops answering (rather than refusing) is given up on after these:
#: connecting, one statement, and a transaction left idle by a replica cut off
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_S = 30
IDLE_IN_TRANSACTION_MS = 60_000
#: the advisory lock taken by whoever migrates a Postgres database ("csjdmigr" in ASCII)
MIGRATION_LOCK_KEY = 0x63736A646D696772


def create_database(settings: Settings) -> AsyncDatabase:
    """Writer and reader engines for the configured Postgres database."""
    connect_args = {
        "timeout": CONNECT_TIMEOUT_S,
        "command_timeout": STATEMENT_TIMEOUT_S,
        "server_settings": {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)},
    }
    # parameters hold secrets, header values and payloads: no error's text may show them
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "hide_parameters": True,
        "connect_args": connect_args,
        **ENGINE_JSON,
    }
    writer = create_async_engine(settings.database_url, pool_size=2, max_overflow=2, **options)
    reader = create_async_engine(settings.database_url, pool_size=4, max_overflow=8, **options)
    return AsyncDatabase(writer, reader)


def lock_for_migration(connection: Connection) -> None:
    """Wait until no one else migrates this database (``migrate.py``)."""
    # a transaction lock: committing the migration releases it, and so does a crash
    connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"))


def asyncpg_dsn(database_url: str) -> str:
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def listen(database_url: str, on_notify: Callable[[], None]) -> None:
    """Call ``on_notify`` for every notification until cancelled; raises if the link drops."""
    conn: Any = await asyncpg.connect(asyncpg_dsn(database_url))
    lost = asyncio.Event()
    try:
        await conn.add_listener(CHANNEL, lambda *_: on_notify())
        conn.add_termination_listener(lambda *_: lost.set())
        while not lost.is_set():
            try:
                async with asyncio.timeout(10):
                    await lost.wait()
            except TimeoutError:
                await conn.execute("SELECT 1")  # notice a dead link even when idle
        raise ConnectionError("the LISTEN connection to Postgres was lost")
    finally:
        if not conn.is_closed():
            await conn.close(timeout=2)


# A target's max_concurrency holds across replicas: one replica at a time
# counts a target's running jobs and claims (a transaction-scoped advisory
# lock); a replica that finds it taken skips the target this round instead of
# waiting, and the one that holds it commits its claim within milliseconds.
CLAIM_LOCK_CLASS = 0x63736A64  # "csjd"
TARGET_ROOM = text(
    "SELECT CASE WHEN pg_try_advisory_xact_lock(:lock_class, hashtext(t.name)) "
    "THEN t.max_concurrency - (SELECT count(*) FROM jobs "
    "WHERE jobs.target = t.name AND jobs.state = 'running') ELSE 0 END "
    "FROM targets t WHERE t.name = :target"
)
# Intake holds the targets it names against a delete (which locks FOR UPDATE)
# until its jobs are committed; key-share locks conflict with nothing else.
_LOCK_TARGETS = text(
    "SELECT * FROM targets WHERE name IN :names ORDER BY name FOR KEY SHARE"
).bindparams(bindparam("names", expanding=True))
_LOCK_TARGET_FOR_DELETE = text("SELECT name FROM targets WHERE name = :name FOR UPDATE SKIP LOCKED")
_SNAPSHOT = text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
_DATABASE_TIME = text("SELECT extract(epoch FROM clock_timestamp())::float8")
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")
# The row says which it was: only a row this statement inserted has no xmax
# (an update leaves there the row lock it took), in or out of a batch.
_UPSERT_TARGET = upsert_target(postgresql.insert(targets)).returning(
    *targets.c, literal_column("xmax = 0", Boolean).label("inserted")
)


class PostgresDialect:
    """Postgres's side of the store's ``Dialect``: replicas writing at once.

    Rows a replica will write are locked ``FOR UPDATE SKIP LOCKED``, so the
    others pass them by instead of waiting; targets are locked against a
    delete; a target's room is counted under an advisory lock; intake wakes
    the other replicas; and the server's clock is everyone's.
    """

    shared = True
    skip_locked = " FOR UPDATE SKIP LOCKED"
    lock_row = " FOR UPDATE"

    def unlocked_rows(self, where: str, *, limit: int | None = None) -> str:
        bound = "" if limit is None else f" LIMIT {limit}"
        return f"id IN (SELECT id FROM jobs WHERE {where}{bound}{self.skip_locked})"

    def counted_update(self, set_: str, where: str) -> tuple[str, ...]:
        # the rows locked are the rows written, and their states before come back
        # from the FROM list, summed by the statement itself
        return (
            f"WITH moved AS (UPDATE jobs SET {set_} FROM (SELECT id, state FROM jobs "
            f"WHERE {where}{self.skip_locked}) AS was WHERE jobs.id = was.id "
            "RETURNING jobs.target, was.state) "
            "SELECT target, state, count(*) FROM moved GROUP BY target, state",
        )

    def insert(self, table: Table) -> postgresql.Insert:
        return postgresql.insert(table)

    def values_rows(self, rows: int, types: Sequence[str], start: int = 1) -> str:
        """``($1::int, …)``: numbered and typed, since Postgres cannot infer the
        types of parameters in a VALUES list."""
        width = len(types)
        return ", ".join(
            "(" + ", ".join(f"${start + r * width + i}::{t}" for i, t in enumerate(types)) + ")"
            for r in range(rows)
        )

    def placeholder(self, n: int, type_: str) -> str:
        return f"${n}::{type_}"

    async def upsert_target(
        self, conn: Conn, parameters: Mapping[str, Any]
    ) -> tuple[RowMapping, bool]:
        row = (await conn.execute(_UPSERT_TARGET, parameters)).mappings().one()
        return row, bool(row["inserted"])

    async def hold_targets(
        self, conn: Conn, names: Collection[str]
    ) -> Mapping[str, RowMapping | None]:
        rows = (await conn.execute(_LOCK_TARGETS, {"names": sorted(names)})).mappings()
        found = {row["name"]: row for row in rows}
        return {name: found.get(name) for name in names}

    async def lock_target_for_delete(self, conn: Conn, name: str) -> bool:
        # without waiting: a target intake holds right now is in use
        return (await conn.execute(_LOCK_TARGET_FOR_DELETE, {"name": name})).first() is not None

    async def claim_room(self, conn: Conn, target: str, wanted: int) -> int:
        if wanted <= 0:
            return wanted
        room = (
            await conn.execute(TARGET_ROOM, {"target": target, "lock_class": CLAIM_LOCK_CLASS})
        ).scalar_one_or_none()
        return min(wanted, int(room or 0))

    async def notify_jobs(self, conn: Conn) -> None:
        await conn.execute(_NOTIFY)  # once per batch: wakes every replica

    async def database_time(self, read: Read) -> float:
        async def unit(conn: Conn) -> float:
            return float((await conn.execute(_DATABASE_TIME)).scalar_one())

        return await read(unit)

    async def snapshot(self, conn: Conn) -> None:
        await conn.execute(_SNAPSHOT)
