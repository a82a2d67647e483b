"""Group commit: many callers' writes share one transaction.

Every write to the database goes through one ``GroupCommitter``. Callers hand
it an operation (an async function of a ``Tx``) and wait; a single writer task
takes all operations waiting at that moment, runs them one after another in
one transaction, commits once, and only then answers each caller. On SQLite
this turns one fsync per job into one per batch and removes lock contention
between writers; a producer still hears ``202`` only after its row is durable.

Operations of one kind can also be merged: ``run_batched(handler, item)``
calls ``handler`` once per transaction with every item waiting for it, so a
burst of intake becomes one multi-row ``INSERT`` instead of one per job.

If an operation raises, the batch is rolled back and each of its operations is
run again alone, so one bad operation fails only its own caller. Operations
must therefore be safe to run twice: all their effects are in the transaction,
and side effects in memory are deferred to ``Tx.after_commit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError

from app.storage.engine import Conn, Database

log = logging.getLogger("csjd.storage")

T = TypeVar("T")


@dataclass(slots=True)
class Tx:
    """What an operation sees: the connection, and hooks for after the commit."""

    conn: Conn
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    #: scratch space shared by the operations of one batch.
    batch: dict[str, Any] = field(default_factory=dict)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached now (not that a query is wrong)."""
    if isinstance(exc, IntegrityError | DataError | ProgrammingError):
        return False
    if isinstance(exc, DBAPIError):
        return True  # operational, interface and driver errors: connection trouble
    return isinstance(exc, OSError | ConnectionError | TimeoutError)


Operation = Callable[[Tx], Awaitable[T]]
#: Given every waiting item, returns one result per item, in order.
BatchHandler = Callable[[Tx, list[Any]], Awaitable[list[Any]]]


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    op: Operation[Any] | None = None
    handler: BatchHandler | None = None
    item: Any = None


class GroupCommitter:
    def __init__(self, database: Database, *, max_batch: int = 512) -> None:
        self._database = database
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.operations = 0

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

    async def run(self, op: Operation[T]) -> T:
        return await self._submit(_Pending(self._future(), op=op))  # type: ignore[no-any-return]

    async def run_batched(self, handler: BatchHandler, item: Any) -> Any:
        return await self._submit(_Pending(self._future(), handler=handler, item=item))

    def _future(self) -> asyncio.Future[Any]:
        if self._task is None or self._task.done():
            raise RuntimeError("the store is not open")
        return asyncio.get_running_loop().create_future()

    async def _submit(self, pending: _Pending) -> Any:
        self._queue.put_nowait(pending)
        return await pending.future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [p for p in batch if not p.future.cancelled()]
            if batch:
                await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            results, hooks = await self._transaction(batch)
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the store is closing"))
            raise
        except Exception as exc:
            if len(batch) == 1 or database_unavailable(exc):
                # one operation, or the database itself is down: no point in
                # running each again alone
                for pending in batch:
                    self._settle(pending, exc=exc)
                return
            log.debug("group commit of %d failed (%r); retrying one by one", len(batch), exc)
            for pending in batch:
                await self._commit_batch([pending])
            return
        self.batches += 1
        self.operations += len(batch)
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("an after-commit hook failed")
        for pending, result in zip(batch, results, strict=True):
            self._settle(pending, result=result)

    async def _transaction(
        self, batch: list[_Pending]
    ) -> tuple[list[Any], list[Callable[[], None]]]:
        results: dict[int, Any] = {}
        groups: dict[BatchHandler, list[int]] = {}
        for i, pending in enumerate(batch):
            if pending.handler is not None:
                groups.setdefault(pending.handler, []).append(i)

        async def unit(conn: Conn) -> list[Callable[[], None]]:
            tx = Tx(conn)
            for i, pending in enumerate(batch):
                if pending.op is not None:
                    results[i] = await pending.op(tx)
                elif pending.handler is not None and pending.handler in groups:
                    members = groups.pop(pending.handler)
                    out = await pending.handler(tx, [batch[j].item for j in members])
                    results.update(zip(members, out, strict=True))
            return tx.after_commit

        hooks = await self._database.write(unit)
        return [results[i] for i in range(len(batch))], hooks

    @staticmethod
    def _settle(pending: _Pending, *, result: Any = None, exc: BaseException | None = None) -> None:
        if pending.future.done():
            return
        if exc is not None:
            pending.future.set_exception(exc)
        else:
            pending.future.set_result(result)
