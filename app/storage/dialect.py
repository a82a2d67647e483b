"""What the SQL store asks of its database's dialect: the few places SQLite and Postgres differ.

``SqlJobStore`` (``sql.py``) and the statements it runs (``statements.py``)
are written once; where the backends part ways they call a ``Dialect``
instead of testing which one they hold. ``SqliteDialect`` (``sqlite.py``)
and ``PostgresDialect`` (``postgres.py``) implement it. They differ in
one thing at heart: a SQLite file has one writer at a time (every write
transaction begins with ``BEGIN IMMEDIATE``), while Postgres replicas write
at once and must lock rows, skip each other's, and wake each other. So on
SQLite the locking hooks do nothing and the statements carry no lock clause.

Statement fragments (``skip_locked``, ``lock_row``, ``unlocked_rows``,
``counted_update``, ``insert``) are read once, when the statements are built;
the hooks run on a transaction's (or a reader's) connection and add no round
trip on SQLite.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import RowMapping, Table
from sqlalchemy.dialects import postgresql, sqlite

from app.storage.engine import Conn, Unit

#: runs a unit of work on a reader and returns its result
Read = Callable[[Unit[float]], Awaitable[float]]
#: an INSERT that can say ``ON CONFLICT``
Insert = sqlite.Insert | postgresql.Insert


class Dialect(Protocol):
    """A backend's fragments of the shared statements, and its hooks."""

    @property
    def shared(self) -> bool:
        """Whether other processes write to this database too (counts go stale)."""
        ...

    @property
    def skip_locked(self) -> str:
        """Ends a SELECT of rows this transaction will write, so that replicas skip
        rows another one is writing instead of waiting for them."""
        ...

    @property
    def lock_row(self) -> str:
        """Ends a SELECT of a row this transaction will write, so that it waits for
        whoever writes the row now and holds it until it ends."""
        ...

    def unlocked_rows(self, where: str, *, limit: int | None = None) -> str:
        """The WHERE term of an UPDATE of the ``jobs`` rows matching ``where`` that
        no other replica is writing: at most ``limit`` of them where writers lock
        rows (a bound on how long the locks are held)."""
        ...

    def counted_update(self, set_: str, where: str) -> tuple[str, ...]:
        """Statements that together ``UPDATE jobs SET {set_}`` where ``where`` holds
        (the rows no other replica is writing), run in order in one transaction;
        the rows they answer are (target, state before, jobs): what was moved from
        where, which the per-target counts need."""
        ...

    def insert(self, table: Table) -> Insert:
        """An INSERT into ``table`` that can say ``ON CONFLICT``."""
        ...

    def values_rows(self, rows: int, types: Sequence[str], start: int = 1) -> str:
        """``rows`` rows of a driver-level VALUES list of ``types``, whose parameters
        are numbered from ``start``."""
        ...

    def placeholder(self, n: int, type_: str) -> str:
        """The driver-level placeholder of parameter ``n``, of type ``type_``."""
        ...

    async def upsert_target(
        self, conn: Conn, parameters: Mapping[str, Any]
    ) -> tuple[RowMapping, bool]:
        """Insert or replace a target (``records.target_row``): its row, and whether
        this statement inserted it."""
        ...

    async def hold_targets(
        self, conn: Conn, names: Collection[str]
    ) -> Mapping[str, RowMapping | None]:
        """Hold the named targets against a delete until this transaction ends: the
        row of each name held (None: no such target). A dialect whose writers
        exclude each other holds and reads nothing here, and answers ``{}``."""
        ...

    async def lock_target_for_delete(self, conn: Conn, name: str) -> bool:
        """Lock target ``name`` so that no intake adds a job for it before this
        transaction ends; False if someone holds it right now (never waits)."""
        ...

    async def claim_room(self, conn: Conn, target: str, wanted: int) -> int:
        """How many of ``wanted`` jobs of ``target`` this claim may take, so that
        the target's ``max_concurrency`` holds across replicas."""
        ...

    async def notify_jobs(self, conn: Conn) -> None:
        """Wake the other replicas: jobs were just added (sent on commit)."""
        ...

    async def database_time(self, read: Read) -> float:
        """The database server's clock, in epoch seconds, where replicas share it."""
        ...

    async def snapshot(self, conn: Conn) -> None:
        """Make this read transaction (begun, nothing read yet) see one snapshot of
        the database throughout."""
        ...
