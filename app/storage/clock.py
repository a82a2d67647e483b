"""The database's clock, read through this process's own: one time for every replica.

Replicas sharing a Postgres database compare times that different processes
wrote: leases, leadership, when a retry or a scheduled job comes due. If
their clocks disagree, a replica ahead of the others sees live leases as
lapsed and sends a job twice. ``DatabaseClock`` is a ``Clock`` whose ``now``
is the database server's: it reads the server's time now and then
(``sync``), keeps the offset to this host's monotonic clock measured in the
quietest of a few round trips, and adds it to that clock in between. Its
error is half a round trip; a step of the local wall clock (NTP) changes
nothing, and the monotonic clock's drift between reads is negligible.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("csjd.clock")

#: how often the offset is read again (a stepped local clock is corrected this fast)
SYNC_EVERY_S = 10.0
#: round trips per reading; the one with the shortest round trip is kept
SAMPLES = 3


class DatabaseClock:
    def __init__(self, read_database_time: Callable[[], Awaitable[float]]) -> None:
        self._read = read_database_time
        #: database time minus this host's monotonic clock, in seconds
        self._base = time.time() - time.monotonic()
        self.synced = False

    def now(self) -> float:
        return time.monotonic() + self._base

    @property
    def offset(self) -> float:
        """The database's time minus this host's wall clock, in seconds (as last read)."""
        return self.now() - time.time()

    async def sync(self) -> float:
        """Measure the offset again; returns it."""
        best: tuple[float, float] | None = None
        for _ in range(SAMPLES):
            before = time.monotonic()
            database = await self._read()
            after = time.monotonic()
            rtt = after - before
            if best is None or rtt < best[0]:
                best = (rtt, database - (before + after) / 2)
        assert best is not None
        moved = abs(best[1] - self._base) > 1.0
        self._base = best[1]
        if not self.synced or moved:
            log.info("database_clock", extra={"offset_s": round(self.offset, 3)})
        self.synced = True
        return self.offset

    async def keep_synced(self) -> None:
        """Read the offset every ``SYNC_EVERY_S`` until cancelled; a failed read keeps
        the last offset (the database is down: nobody compares times meanwhile)."""
        while True:
            await asyncio.sleep(SYNC_EVERY_S)
            try:
                await self.sync()
            except Exception as exc:
                log.warning("database_clock_unread", extra={"error": type(exc).__name__})
