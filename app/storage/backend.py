"""The gateway's one way into storage: the store, and what a process needs beside it.

For a configured database and a process role (``ProcessRole``), ``Backend``
says what that process takes and runs around its ``JobStore``: the per-duty
locks that keep a second gateway off one SQLite file (none on Postgres), the
migration, the database clock replicas on Postgres share, the listener that
wakes this process's dispatcher when another process accepted jobs (``LISTEN``
on Postgres, the datagram socket of a SQLite gateway split over two
processes), and the waker by which the API process of such a split sends
those wake-ups. It decides nothing about when these run: ``app/gateway.py``
does, and ``app/cli.py`` uses the locks and the migration. Nothing above
storage imports a concrete store module or SQLAlchemy; it comes here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from app.dispatch import wakeup
from app.settings import ProcessRole, Settings
from app.storage import postgres
from app.storage.base import JobStore
from app.storage.clock import DatabaseClock
from app.storage.factory import build_store
from app.storage.migrate import Revision, upgrade, upgrade_async
from app.storage.sqlite import DatabaseInUse, DatabaseLock, sqlite_path

__all__ = ["Backend", "DatabaseClock", "DatabaseInUse", "Listener", "Locks"]

log = logging.getLogger("csjd")

#: a loop that wakes the dispatcher for every wake-up received, until cancelled
Listener = Callable[[], Awaitable[None]]


class Locks:
    """The locks of one process's duties (``ProcessRole.duties``) on a SQLite file:
    one process per duty and file. ``DatabaseInUse`` names the holder."""

    def __init__(self, database_url: str, role: ProcessRole) -> None:
        self._locks = [DatabaseLock(database_url, duty) for duty in role.duties]

    def acquire(self) -> None:
        for lock in self._locks:
            lock.acquire()

    def release(self) -> None:
        for lock in self._locks:
            lock.release()

    def probe(self) -> None:
        """``DatabaseInUse`` if another process holds one; holds none afterwards."""
        for lock in self._locks:
            lock.acquire()
            lock.release()


@dataclass(frozen=True, slots=True)
class Backend:
    """What a process of ``role`` needs of the database ``settings`` configure."""

    settings: Settings
    role: ProcessRole

    def store(self) -> JobStore:
        # a process alone on its database keeps exact counts; one of a split does not
        return build_store(self.settings, shared=self.role is not ProcessRole.ALL)

    def locks(self) -> Locks:
        return Locks(self.settings.database_url, self.role)

    async def migrate(self) -> None:
        self._migrated(await upgrade_async(self.settings.database_url))

    def migrate_blocking(self) -> None:
        """``migrate`` outside an event loop (``csjd migrate``)."""
        self._migrated(upgrade(self.settings.database_url))

    def _migrated(self, revision: Revision) -> None:
        log.info(
            "migrated",
            extra={
                "database": self.settings.database_shown,
                "revision": revision.id,
                "migration": revision.file,
                "description": revision.description,
            },
        )

    def clock(self, store: JobStore) -> DatabaseClock | None:
        """The database's clock where replicas compare times each other wrote (Postgres)."""
        return DatabaseClock(store.database_time) if self.settings.is_postgres else None

    def listener(self, wake: Callable[[], None]) -> Listener | None:
        """What calls ``wake`` when another process accepted jobs, if anything does."""
        if self.settings.is_postgres and self.role.dispatches:
            return partial(postgres.listen, self.settings.database_url, wake)
        database_file = self._database_file()
        if database_file is not None and self.role is ProcessRole.DISPATCHER:
            return partial(wakeup.listen, database_file, wake)
        return None

    def waker(self) -> wakeup.WakeSender | None:
        """How the API process of a split SQLite gateway wakes the dispatcher process."""
        database_file = self._database_file()
        if database_file is not None and self.role is ProcessRole.API:
            return wakeup.WakeSender(database_file)
        return None

    def _database_file(self) -> Path | None:
        """The SQLite file (None on Postgres, or for a database in memory)."""
        return sqlite_path(self.settings.database_url)
