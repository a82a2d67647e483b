"""Group commit: many callers' writes share one transaction.

Every write to the database goes through one ``GroupCommitter``. Callers hand
it an operation (an async function of a ``Tx``) and wait; a single writer task
takes all operations waiting (and those the event loop's next few passes bring,
while each brings more), runs them one after another in one transaction,
commits once, and only then answers each caller. On SQLite
this turns one fsync per job into one per batch and removes lock contention
between writers; a producer still hears ``202`` only after its row is durable.

Operations of one kind can also be merged: ``run_batched(handler, item)``
calls ``handler`` once per transaction with every item waiting for it, so a
burst of intake becomes one multi-row ``INSERT`` instead of one per job.
``run_many(handler, items)`` hands several items at once, which are never
split: they share one transaction, even when the batch is run again alone.

If an operation raises, what happens depends on what the error means
(``faults.py``). A transient error (a dropped connection, a deadlock,
``SQLITE_BUSY``) runs the whole batch again after a backoff, for up to
``TRANSIENT_BUDGET_S``; past that every caller gets ``DatabaseUnavailable``,
and until a commit succeeds again later batches get one try each, so an
outage answers ``503`` at once instead of queueing producers behind retries.
Any other error rolls the batch back and runs each operation again alone, so
one bad operation (a row the database refuses) fails only its own caller; so
does a transient error past the budget while the database answers reads.
Operations must therefore be safe to run twice: all their effects are in the
transaction, and side effects in memory are deferred to ``Tx.after_commit``.
A batch may also run again after a commit whose answer was lost (the server
may have made it): intake and claims then find their own rows (``intake.py``,
``delivery.py``).

Locks are taken in one order on Postgres, so that transactions of different
replicas never wait on each other in a cycle: operations that lock rows
others write in batches (operator commands, leadership, rescue) run in a
transaction of their own (``run(op, alone=True)``), and writes to target rows
are deferred to the end of the transaction (``Tx.at_end``), in name order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from app.core.errors import DatabaseUnavailable, RefusedByDatabase
from app.storage.engine import Conn, Database
from app.storage.faults import Fault, classify, contention

log = logging.getLogger("csjd.storage")

T = TypeVar("T")

#: how long a batch is run again after transient errors before its callers hear 503
TRANSIENT_BUDGET_S = 3.0
FIRST_BACKOFF_S = 0.02
MAX_BACKOFF_S = 0.5

#: Where writes run in a thread of their own (SQLite), how many passes of the
#: event loop a batch waits for more operations, as long as each pass brings
#: some. Under load, the moment one operation waits is the moment the loop is
#: busiest: it is still answering the last batch's callers and reading their
#: next requests. A transaction started then is small, and its thread contends
#: with the loop for the GIL on every statement. Gathering made intake about
#: 15 % faster and a drain about 20 %, each at about a fifth less CPU per job
#: (docs/performance.md). A lone operation on a quiet loop waits one pass.
#: On Postgres the writes run on the loop itself, and a batch starts at once.
GATHER_PASSES = 16

#: a write to run at the end of the transaction
EndOp = Callable[[Conn], Awaitable[None]]


@dataclass(slots=True)
class Tx:
    """What an operation sees: the connection, and hooks for after the commit."""

    conn: Conn
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    #: scratch space shared by the operations of one batch.
    batch: dict[str, Any] = field(default_factory=dict)
    _at_end: list[tuple[str, int, EndOp]] = field(default_factory=list)

    def at_end(self, key: str, op: EndOp) -> None:
        """Run ``op`` just before the commit, after every operation, in ``key`` order
        (then in the order given): how target rows are locked in one order."""
        self._at_end.append((key, len(self._at_end), op))

    async def run_at_end(self) -> None:
        ops, self._at_end = sorted(self._at_end, key=lambda e: e[:2]), []
        for _, _, op in ops:
            await op(self.conn)


def unavailable(exc: BaseException) -> DatabaseUnavailable:
    error = DatabaseUnavailable()
    error.__cause__ = exc
    return error


Operation = Callable[[Tx], Awaitable[T]]
#: Given every waiting item, returns one result per item, in order.
BatchHandler = Callable[[Tx, list[Any]], Awaitable[list[Any]]]


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    op: Operation[Any] | None = None
    handler: BatchHandler | None = None
    item: Any = None
    alone: bool = False
    #: ``item`` is a list of items, answered by a list of results
    many: bool = False


class GroupCommitter:
    def __init__(self, database: Database, *, max_batch: int = 512) -> None:
        self._database = database
        self._max_batch = max_batch
        self._gather_passes = GATHER_PASSES if database.writes_in_thread else 0
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.operations = 0
        #: transient errors met (and run again)
        self.transient_errors = 0
        #: a batch used up its retries and no commit has succeeded since
        self.failing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="csjd-writer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the store is closed"))

    async def run(self, op: Operation[T], *, alone: bool = False) -> T:
        """``alone``: in a transaction of its own (see the module's note on locks)."""
        pending = _Pending(self._future(), op=op, alone=alone)
        return await self._submit(pending)  # type: ignore[no-any-return]

    async def run_batched(self, handler: BatchHandler, item: Any) -> Any:
        return await self._submit(_Pending(self._future(), handler=handler, item=item))

    async def run_many(self, handler: BatchHandler, items: list[Any]) -> list[Any]:
        """``handler``'s results for ``items``, in order, all from one transaction."""
        if not items:
            return []
        pending = _Pending(self._future(), handler=handler, item=items, many=True)
        return await self._submit(pending)  # type: ignore[no-any-return]

    def _future(self) -> asyncio.Future[Any]:
        if self._task is None or self._task.done():
            raise RuntimeError("the store is not open")
        return asyncio.get_running_loop().create_future()

    async def _submit(self, pending: _Pending) -> Any:
        self._queue.put_nowait(pending)
        return await pending.future

    async def _run(self) -> None:
        while True:
            batch: list[_Pending] = []
            try:
                await self._gather(batch)
                shared = [p for p in batch if not p.alone]
                if shared:
                    await self._commit_batch(shared)
                for pending in batch:
                    if pending.alone:
                        await self._commit_batch([pending])
            except asyncio.CancelledError:
                # whatever was taken from the queue and not settled is answered
                for pending in batch:
                    self._settle(pending, exc=RuntimeError("the store is closing"))
                raise

    async def _gather(self, batch: list[_Pending]) -> None:
        """Fill ``batch`` with the operations waiting now, and with those the event
        loop's next passes bring, while each pass brings some (``GATHER_PASSES``)."""
        batch.append(await self._queue.get())
        passes = 0
        while True:
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if len(batch) >= self._max_batch or passes == self._gather_passes:
                break
            passes += 1
            await asyncio.sleep(0)
            if self._queue.empty():
                break
        batch[:] = [p for p in batch if not p.future.cancelled()]

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            results, hooks = await self._transaction_retried(batch)
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the store is closing"))
            raise
        except Exception as exc:
            fault = classify(exc)
            if fault is Fault.TRANSIENT:
                error: BaseException = unavailable(exc)
            elif fault is Fault.REFUSED:
                error = RefusedByDatabase("the database refused to store this request's values")
                error.__cause__ = exc
            else:
                error = exc
            if (
                fault is Fault.TRANSIENT
                and len(batch) > 1
                and not contention(exc)
                and await self._answers()
            ):
                # the database answers, yet this batch keeps failing: one of its
                # operations may be what fails, so each runs alone (one try each)
                fault = Fault.BUG
            elif len(batch) == 1 or fault is Fault.TRANSIENT:
                # one operation, or the database itself is out of reach: no
                # point in running each again alone
                if fault is Fault.REFUSED:
                    log.warning("write_refused", extra={"error": type(exc).__name__})
                elif fault is Fault.BUG:
                    log.error("write_failed", exc_info=exc)
                for pending in batch:
                    self._settle(pending, exc=error)
                return
            log.debug("group commit of %d failed (%s); each alone", len(batch), type(exc).__name__)
            for pending in batch:
                await self._commit_batch([pending])
            return
        self.failing = False
        self.batches += 1
        self.operations += len(batch)
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("an after-commit hook failed")
        for pending, result in zip(batch, results, strict=True):
            self._settle(pending, result=result)

    async def _transaction_retried(
        self, batch: list[_Pending]
    ) -> tuple[list[Any], list[Callable[[], None]]]:
        """``_transaction``, run again after transient errors, within the budget."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0.0 if self.failing else TRANSIENT_BUDGET_S)
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                return await self._transaction(batch)
            except Exception as exc:
                if classify(exc) is not Fault.TRANSIENT:
                    raise
                self.transient_errors += 1
                if loop.time() + backoff > deadline:
                    if not self.failing:
                        log.warning("database_unavailable", extra={"error": type(exc).__name__})
                    self.failing = True
                    raise
                log.info("transient_database_error", extra={"error": type(exc).__name__})
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def _transaction(
        self, batch: list[_Pending]
    ) -> tuple[list[Any], list[Callable[[], None]]]:
        async def unit(conn: Conn) -> tuple[dict[int, Any], list[Callable[[], None]]]:
            # built anew on every run: a batch may run more than once
            results: dict[int, Any] = {}
            groups: dict[BatchHandler, list[int]] = {}
            for i, pending in enumerate(batch):
                if pending.handler is not None:
                    groups.setdefault(pending.handler, []).append(i)
            tx = Tx(conn)
            for i, pending in enumerate(batch):
                if pending.op is not None:
                    results[i] = await pending.op(tx)
                elif pending.handler is not None and pending.handler in groups:
                    members = groups.pop(pending.handler)
                    items: list[Any] = []
                    for j in members:
                        if batch[j].many:
                            items.extend(batch[j].item)
                        else:
                            items.append(batch[j].item)
                    out = await pending.handler(tx, items)
                    if len(out) != len(items):
                        raise RuntimeError(f"{len(out)} results for {len(items)} items")
                    at = 0
                    for j in members:
                        if batch[j].many:
                            n = len(batch[j].item)
                            results[j] = out[at : at + n]
                            at += n
                        else:
                            results[j] = out[at]
                            at += 1
            await tx.run_at_end()
            return results, tx.after_commit

        results, hooks = await self._database.write(unit)
        return [results[i] for i in range(len(batch))], hooks

    async def _answers(self) -> bool:
        """Whether the database answers a trivial read right now."""

        async def ping(conn: Conn) -> None:
            await conn.exec_driver_sql("SELECT 1")

        try:
            await self._database.read(ping)
        except Exception:
            return False
        return True

    @staticmethod
    def _settle(pending: _Pending, *, result: Any = None, exc: BaseException | None = None) -> None:
        if pending.future.done():
            return
        if exc is not None:
            pending.future.set_exception(exc)
        else:
            pending.future.set_result(result)
