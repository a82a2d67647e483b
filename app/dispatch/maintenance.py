"""Housekeeping beside the dispatcher: rescue, expiry, retention, the per-target counts
and the state gauge.

Gateways sharing a database elect one of them to do the housekeeping (a lease
row in ``leaders``, renewed every tick and taken over by another gateway once
it lapses); every gateway refreshes its own gauge.

Every few seconds attempts whose lease ran out are brought back (their worker
is gone), jobs whose ``expires_at`` passed while they waited are failed
(``expired``), the ``csjd_jobs{state}`` gauge is refreshed, and once a
minute terminal jobs older than ``CSJD_RETENTION_S`` are purged with their
attempts (which also frees their idempotency keys), the per-target backlog
kept by the writes (``app/storage/counts.py``) is checked against the jobs and
corrected if it is off (it never is, unless something but csjd wrote the
jobs: a correction is logged), and per-minute counts older than
``MINUTES_KEPT_S`` are forgotten.

The gauge never reads the table. The unfinished states are read every tick
from the backlog the writes keep per target: a row per target and state,
however deep the backlog. The finished states are counted from their partial
index, which holds every job kept for ``CSJD_RETENTION_S``, so those are
counted again only once the time since their last count is ``1 /
FINISHED_COUNT_SHARE`` times what that count took: every tick while the
table is small, less often as it grows, and never more than that share of
one connection's time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from app.core.clock import Clock
from app.core.errors import DatabaseUnavailable
from app.core.job import ACTIVE, TERMINAL, JobState
from app.core.retry import Random
from app.metrics import Metrics
from app.storage.base import JobStore
from app.supervisor import Supervisor

log = logging.getLogger("csjd.maintenance")

TICK_S = 5.0
DUTY = "maintenance"
#: a leader that stops renewing (every tick) is replaced after this long
LEADER_TTL_S = 15.0
#: how long a stopping leader waits to hand its duty on (else its lease lapses)
RESIGN_WAIT_S = 1.0
PURGE_EVERY_TICKS = 12
#: a lease is rescued this long after it lapsed, and a leader that lost the
#: database rescues nothing for this long once it is back: a live holder that
#: lost it too renews its leases (or writes its results) first, within a second
RESCUE_GRACE_S = 5.0
#: the most of its time the gauge may spend counting finished jobs
FINISHED_COUNT_SHARE = 0.02
#: how long per-minute counts are kept (the dashboard shows the last 15 minutes)
MINUTES_KEPT_S = 3600.0


class Maintenance:
    def __init__(
        self,
        store: JobStore,
        *,
        clock: Clock,
        rng: Random,
        metrics: Metrics,
        retention_s: float,
        supervisor: Supervisor,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._supervisor = supervisor
        self._rng = rng
        self._clock = clock
        self._metrics = metrics
        self._retention_s = retention_s
        self._monotonic = monotonic
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leading = False
        #: (monotonic) when the finished jobs may be counted again
        self._count_finished_at = 0.0
        #: (monotonic) no rescue before this: the database was out of reach until lately
        self._rescue_from = 0.0
        self._database_lost = False

    async def start(self) -> None:
        await self.tick(purge=True)
        self._supervisor.start("maintenance", self._run)

    async def stop(self) -> None:
        await self._supervisor.stop("maintenance")
        if self.leading:
            # a clean stop hands the duty on at once, rather than after its lease:
            # the next gateway rescues, expires and fires schedules without a pause
            self.leading = False
            try:
                # bounded: a database out of reach must not hold the stop up
                await asyncio.wait_for(self._store.resign(DUTY, self._holder), RESIGN_WAIT_S)
            except Exception as exc:  # the lease lapses by itself
                log.info("lead_kept_until_it_lapses", extra={"error": type(exc).__name__})

    async def tick(self, *, purge: bool) -> None:
        now = self._clock.now()
        self.leading = await self._store.try_lead(DUTY, self._holder, now, LEADER_TTL_S)
        if self._database_lost:
            self._database_lost = False
            self._rescue_from = self._monotonic() + RESCUE_GRACE_S
        if self.leading:
            await self._lead(now, purge=purge)
        if purge or self._store.shared:
            # other gateways change the backlog too: count it again
            await self._store.recount()
        self._metrics.set_job_counts(await self._count_jobs())

    async def _count_jobs(self) -> dict[JobState, int]:
        counts = await self._store.count_by_state(ACTIVE)
        started = self._monotonic()
        if started >= self._count_finished_at:
            counts.update(await self._store.count_by_state(TERMINAL))
            took = self._monotonic() - started
            self._count_finished_at = started + took / FINISHED_COUNT_SHARE
        return counts

    async def _lead(self, now: float, *, purge: bool) -> None:
        if self._monotonic() >= self._rescue_from:
            rescued = await self._store.rescue(
                now, self._rng, expired_only=True, grace_s=RESCUE_GRACE_S
            )
            if rescued:
                log.warning("expired_leases_rescued", extra={"count": rescued})
        expired = await self._store.fail_expired(now)
        if expired:
            log.warning("jobs_expired", extra={"count": expired})  # each ended failed
        if purge:
            purged = await self._store.purge(now - self._retention_s)
            if purged:
                log.info("jobs_purged", extra={"count": purged})
            await self._keep_counts(now)

    async def _keep_counts(self, now: float) -> None:
        stranded = await self._store.repair_lines(now)
        if stranded:
            log.warning("ordering_lines_repaired", extra={"count": stranded})
        off = await self._store.repair_backlog()
        if off:
            corrections = ", ".join(f"{t}/{s}: {n:+d}" for (t, s), n in sorted(off.items()))
            log.warning("backlog_counts_repaired", extra={"corrections": corrections})
        await self._store.forget_minutes(now - MINUTES_KEPT_S)

    async def _run(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(TICK_S)
            ticks += 1
            await self.tick_guarded(purge=ticks % PURGE_EVERY_TICKS == 0)

    async def tick_guarded(self, *, purge: bool) -> None:
        """A tick whose failure is logged, never raised; one the database failed
        also holds rescue back for ``RESCUE_GRACE_S`` after the database is back."""
        try:
            await self.tick(purge=purge)
        except DatabaseUnavailable:
            self._database_lost = True
            log.warning("maintenance_deferred")
        except Exception:
            log.exception("maintenance_failed")
