"""The leases this process holds, and the heartbeat that keeps them.

Each claimed job runs under a lease: its delivery number is the token, and the
lease lapses ``lease_s`` after its last renewal, so only a dead process's
attempts are ever rescued. ``Leases`` keeps job id -> delivery number for the
deliveries this process runs (the claim loop adds and removes them) and
``heartbeat`` extends all of them every ``heartbeat_s``, one write for all.
After the database failed a renewal, the next comes in ``unavailable_pause_s``,
not a whole heartbeat later. Nothing here claims or delivers.
"""

from __future__ import annotations

import asyncio
import logging

from app.core.clock import Clock
from app.core.errors import DatabaseUnavailable
from app.dispatch.timings import Timings
from app.storage.base import JobStore

log = logging.getLogger("csjd")


class Leases:
    def __init__(self, store: JobStore, clock: Clock, timings: Timings) -> None:
        self._store = store
        self._clock = clock
        self._timings = timings
        #: job id -> delivery number (the lease token) of each delivery this process runs
        self._held: dict[str, int] = {}

    def hold(self, job_id: str, delivery: int) -> None:
        self._held[job_id] = delivery

    def release(self, job_id: str) -> None:
        self._held.pop(job_id, None)

    async def heartbeat(self) -> None:
        """Extend the leases held, forever (the supervisor runs and stops it)."""
        timings = self._timings
        pause = timings.heartbeat_s
        while True:
            await asyncio.sleep(pause)
            pause = timings.heartbeat_s
            if self._held:
                try:
                    await self._store.extend_leases(
                        dict(self._held), self._clock.now() + timings.lease_s
                    )
                except DatabaseUnavailable:
                    log.warning("lease_renewal_deferred", extra={"leases": len(self._held)})
                    pause = timings.unavailable_pause_s
