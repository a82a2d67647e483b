"""How the store reaches its database: a whole unit of work at a time.

The store hands ``Database.write`` (one transaction) or ``Database.read`` an
``async`` function of a ``Conn`` and gets its result. ``Conn`` is the part of
SQLAlchemy's ``AsyncConnection`` the store uses: ``execute``,
``exec_driver_sql`` and ``dialect``.

- Postgres: asyncpg is asynchronous itself, so ``AsyncDatabase`` runs the
  unit on SQLAlchemy's async engines, on the event loop.
- SQLite: aiosqlite moves every statement to a thread of its own and back,
  about eight thread hops for the smallest transaction, which cost about
  1 ms of CPU each time. ``ThreadedSqlite`` instead runs the whole unit in a
  worker thread on a plain ``sqlite3`` connection: one hop. The unit is the
  same ``async`` function; on a ``SyncConn`` its awaits never suspend, so the
  worker drives it to completion without an event loop. A unit that awaits
  anything else is a programming error and fails loudly. Each thread keeps
  its connection from one unit to the next instead of checking it out of the
  pool and back (with the pool's reset) for every unit; a read ends its
  transaction when the unit ends, so no reader holds an old snapshot.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")


class Conn(Protocol):
    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, statement: Any, parameters: Any = None) -> Any: ...

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Any: ...


Unit = Callable[[Conn], Awaitable[T]]


class Database(Protocol):
    @property
    def dialect(self) -> Dialect: ...

    @property
    def writes_in_thread(self) -> bool:
        """Whether a write runs in a thread of its own, beside the event loop
        (the group committer gathers its batches longer then: ``group.py``)."""
        ...

    async def write(self, unit: Unit[T]) -> T:
        """Run ``unit`` in one transaction: committed if it returns, rolled back if it raises."""
        ...

    async def read(self, unit: Unit[T]) -> T: ...

    async def close(self) -> None: ...


class AsyncDatabase:
    """SQLAlchemy's async engines (Postgres over asyncpg)."""

    def __init__(self, writer: AsyncEngine, reader: AsyncEngine) -> None:
        self._writer = writer
        self._reader = reader

    @property
    def dialect(self) -> Dialect:
        return self._writer.dialect

    @property
    def writes_in_thread(self) -> bool:
        return False

    async def write(self, unit: Unit[T]) -> T:
        async with self._writer.begin() as conn:
            return await unit(conn)

    async def read(self, unit: Unit[T]) -> T:
        async with self._reader.connect() as conn:
            return await unit(conn)

    async def close(self) -> None:
        await self._writer.dispose()
        await self._reader.dispose()


class SyncConn:
    """A synchronous connection behind ``Conn``'s awaitable methods."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Dialect:
        return self._conn.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._conn.execute(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Any:
        return self._conn.exec_driver_sql(statement, parameters)


class UnitSuspended(RuntimeError):
    """A unit of work on ``ThreadedSqlite`` awaited something other than its connection."""


def run_to_completion(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends, run here and now."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise UnitSuspended("a unit of work on SQLite may await only its connection")


class ThreadedSqlite:
    """SQLite through ``sqlite3``: every write in one writer thread, reads in a small pool."""

    def __init__(self, writer: Engine, reader: Engine, *, readers: int) -> None:
        self._writer = writer
        self._reader = reader
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="csjd-sqlite-writer")
        self._read_threads = ThreadPoolExecutor(readers, thread_name_prefix="csjd-sqlite-reader")
        #: each worker thread's own connection, kept from one unit to the next
        self._held = threading.local()
        self._opened: list[Connection] = []
        self._opened_lock = threading.Lock()

    @property
    def dialect(self) -> Dialect:
        return self._writer.dialect

    @property
    def writes_in_thread(self) -> bool:
        return True

    async def write(self, unit: Unit[T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_thread, self._write, unit)

    async def read(self, unit: Unit[T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_threads, self._read, unit)

    def _connection(self, engine: Engine) -> Connection:
        """This thread's connection to ``engine``; a new one if the last was lost."""
        conn: Connection | None = getattr(self._held, "conn", None)
        if conn is not None and not (conn.closed or conn.invalidated):
            return conn
        if conn is not None:
            conn.close()
            with self._opened_lock:
                self._opened.remove(conn)
        conn = engine.connect()
        with self._opened_lock:
            self._opened.append(conn)
        self._held.conn = conn
        return conn

    def _write(self, unit: Unit[T]) -> T:
        conn = self._connection(self._writer)
        with conn.begin():
            return run_to_completion(_coroutine(unit, SyncConn(conn)))

    def _read(self, unit: Unit[T]) -> T:
        conn = self._connection(self._reader)
        try:
            return run_to_completion(_coroutine(unit, SyncConn(conn)))
        finally:
            conn.rollback()  # the read transaction ends with the unit

    async def close(self) -> None:
        # a unit still running (its caller was cancelled) finishes before the engines go
        await asyncio.to_thread(self._write_thread.shutdown, wait=True)
        await asyncio.to_thread(self._read_threads.shutdown, wait=True)
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._writer.dispose()
        self._reader.dispose()


async def _call(unit: Unit[T], conn: Conn) -> T:
    return await unit(conn)


def _coroutine(unit: Unit[T], conn: Conn) -> Coroutine[Any, Any, T]:
    return _call(unit, conn)
