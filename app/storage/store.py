"""What every part of the ``SqlJobStore`` shares: its database and dialect, its
committer and statements, the count of unfinished jobs, the targets a write
batch has looked up, and the per-target counts its writes change.

The store is put together from parts by domain (``sql.py``: targets, reads and
operator commands; ``intake.py``; ``delivery.py``; ``schedules.py``), each a
subclass of ``SqlStoreBase``; reads (``_read``) are retried here after
transient errors. Helpers here run inside a ``GroupCommitter`` transaction
(``Tx``): what they learn or change is kept in the batch (``tx.batch``) and
applied to this process's state only after the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from functools import partial
from typing import TypeVar

from app.core import errors
from app.core.target import TargetRecord
from app.storage import statements
from app.storage.base import no_one_listens
from app.storage.counts import Tally
from app.storage.dialect import Dialect
from app.storage.engine import Conn, Database, Unit
from app.storage.faults import Fault, classify
from app.storage.group import FIRST_BACKOFF_S, MAX_BACKOFF_S, GroupCommitter, Tx, unavailable
from app.storage.ordering import LineStatements
from app.storage.records import target_record
from app.storage.statements import TARGET_BY_NAME, Statements

T = TypeVar("T")

#: how long a read is tried again after transient errors before it answers 503
READ_BUDGET_S = 1.0

_ACTIVE_DELTA = "active_delta"
_TALLY = "tally"


def raise_if_error(result: T | errors.CsjdError) -> T:
    """``result``, or raised if it is a refusal (returned from inside a batch)."""
    if isinstance(result, errors.CsjdError):
        raise result
    return result


class SqlStoreBase:
    """The state, and the helpers inside a write, that the store's parts share."""

    def __init__(self, database: Database, dialect: Dialect, *, max_backlog: int) -> None:
        #: told, after each commit, which jobs changed state (None: some, unknown which)
        self.on_change: Callable[[Iterable[str] | None], None] = no_one_listens
        self._database = database
        self._dialect = dialect
        self._statements = Statements.build(dialect)
        self._writer = GroupCommitter(database)
        self._max_backlog = max_backlog
        self._active = 0

    @property
    def shared(self) -> bool:
        """Whether other processes write to this database too (counts go stale)."""
        return self._dialect.shared

    @property
    def database(self) -> Database:
        return self._database

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def statements(self) -> Statements:
        return self._statements

    @property
    def committer(self) -> GroupCommitter:
        return self._writer

    @property
    def _lines(self) -> LineStatements:
        return self._statements.lines

    # -- reads ------------------------------------------------------------------

    async def _read(self, unit: Unit[T], *, budget_s: float = READ_BUDGET_S) -> T:
        """``unit`` on a reader, run again after transient errors for ``budget_s``;
        then ``DatabaseUnavailable``. No driver error leaves the store."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                return await self._database.read(unit)
            except Exception as exc:
                fault = classify(exc)
                if fault is Fault.REFUSED:
                    # a value no query can hold (a NUL byte in an id): the asker's
                    raise errors.BadRequest("the database refused a value of this request") from exc
                if fault is not Fault.TRANSIENT:
                    raise
                if loop.time() + backoff > deadline:
                    raise unavailable(exc) from exc
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    # -- unfinished jobs, as this process counts them ---------------------------

    @property
    def active(self) -> int:
        """Non-terminal jobs, as this process counts them."""
        return self._active

    async def recount(self) -> int:
        self._active = await self._writer.run(self._count_active)
        return self._active

    async def _count_active(self, tx: Tx) -> int:
        return int((await tx.conn.execute(statements.COUNT_ACTIVE)).scalar_one())

    def _adjust_active(self, tx: Tx, delta: int) -> None:
        if delta:
            tx.batch[_ACTIVE_DELTA] = tx.batch.get(_ACTIVE_DELTA, 0) + delta

            def apply() -> None:
                self._active += delta

            tx.after_commit.append(apply)

    def _pending_active(self, tx: Tx) -> int:
        return self._active + int(tx.batch.get(_ACTIVE_DELTA, 0))

    # -- the per-target counts a write batch changes (counts.py) ----------------

    def _tally(self, tx: Tx) -> Tally:
        """The batch's changes to the counts, written as the transaction ends."""
        tally: Tally | None = tx.batch.get(_TALLY)
        if tally is None:
            tally = tx.batch[_TALLY] = Tally()
            # first of what runs at the end (target rows are keyed by their names),
            # so every writer locks the counts' rows first, and in one order
            tx.at_end("", partial(self._write_tally, tally))
        return tally

    async def _write_tally(self, tally: Tally, conn: Conn) -> None:
        if rows := tally.backlog_rows():
            await conn.execute(self._statements.add_backlog, rows)
        if rows := tally.minute_rows():
            await conn.execute(self._statements.add_minutes, rows)

    # -- targets in a write batch --------------------------------------------

    async def _hold_targets(self, tx: Tx, names: set[str]) -> None:
        """Hold the named targets against a delete, and cache what the dialect read."""
        cache: dict[str, TargetRecord | None] = tx.batch.setdefault("targets", {})
        for name, row in (await self._dialect.hold_targets(tx.conn, names)).items():
            cache[name] = None if row is None else target_record(row)

    async def _target_in_batch(self, tx: Tx, name: str) -> TargetRecord | None:
        cache: dict[str, TargetRecord | None] = tx.batch.setdefault("targets", {})
        if name not in cache:
            row = (await tx.conn.execute(TARGET_BY_NAME, {"name": name})).mappings().first()
            cache[name] = None if row is None else target_record(row)
        return cache[name]
