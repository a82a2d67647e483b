"""Firing schedules: on the elected leader, every second, each due schedule makes its job.

Gateways sharing a database fire schedules on the one that leads maintenance
(``maintenance.py``'s lease in ``leaders``), by the gateway's clock, which on
Postgres is the database's (``app/storage/clock.py``): replicas whose own
clocks disagree still fire at one time. Each tick reads the schedules whose
``next_run_at`` has passed, asks the core what each fire is (``plan``: the
latest fire time passed, so fire times missed while no gateway ran collapse
into one job), and has the store write it (``fire_schedule``: the job through
intake and the schedule moved on, in one transaction, over the schedule as it
was read). Two leaders for a moment (a lease taken over while its old holder
still ticks) fire one job all the same: the idempotency key
``schedule:<name>:<fire time>`` and the guard on the schedule see to that.
A fire whose target is disabled or gone, or that the backlog bound refuses,
is skipped: logged, shown on the schedule (``last_error``), and the schedule
goes on to its next fire time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.core.clock import Clock
from app.core.errors import DatabaseUnavailable
from app.core.job import JobState
from app.core.schedule import Fired, InvalidSchedule, fire_time, plan
from app.core.target import TargetRecord
from app.metrics import Metrics
from app.storage.base import JobStore
from app.supervisor import Supervisor

log = logging.getLogger("csjd.schedules")

#: how often the leader looks for due schedules: a fire is at most this late
TICK_S = 1.0
#: due schedules one tick fires (the rest in the ticks after it)
BATCH = 100


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        *,
        clock: Clock,
        metrics: Metrics,
        wake: Callable[[], None],
        leading: Callable[[], bool],
        supervisor: Supervisor,
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._wake = wake
        self._leading = leading
        self._supervisor = supervisor
        #: the database was out of reach at the last tick (logged once an outage)
        self._deferred = False

    async def start(self) -> None:
        """Fire what is due now (what came due while no gateway ran), then every tick."""
        await self.tick_guarded()
        self._supervisor.start("schedules", self._run)

    async def stop(self) -> None:
        await self._supervisor.stop("schedules")

    async def tick(self) -> list[Fired]:
        """Fire the schedules due now, if this gateway leads: what each fire did."""
        if not self._leading():
            return []
        now = self._clock.now()
        due = await self._store.due_schedules(now, limit=BATCH)
        targets: dict[str, TargetRecord | None] = {}
        done: list[Fired] = []
        for record in due:
            name = record.spec.target
            if name not in targets:
                targets[name] = await self._store.get_target(name)
            try:
                fire = plan(record, targets[name], now)
            except InvalidSchedule as exc:
                # stored before a change of what is valid; the others still fire
                log.error("schedule_invalid", extra={"schedule": record.name, "error": str(exc)})
                continue
            if fire is None:
                continue
            fired = await self._store.fire_schedule(fire)
            if fired is not None:
                self._report(fired)
                done.append(fired)
        if any(f.job is not None and f.job.state is JobState.QUEUED for f in done):
            self._wake()
        return done

    def _report(self, fired: Fired) -> None:
        fire = fired.fire
        fields = {
            "schedule": fire.name,
            "target": fire.job.target,
            "fire_at": fire_time(fire.fire_at),
        }
        if fired.job is None:
            reason = fired.refusal.detail if fired.refusal else None
            log.warning("schedule_skipped", extra={**fields, "reason": reason})
            return
        if not fired.replayed:
            self._metrics.target(fired.job.target).accepted.inc()
        log.info(
            "schedule_fired",
            extra={**fields, "job_id": fired.job.id, "replayed": fired.replayed},
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self.tick_guarded()

    async def tick_guarded(self) -> None:
        """A tick whose failure is logged, never raised: the next tick tries again
        (a database out of reach is logged when it goes, not every second)."""
        try:
            await self.tick()
        except DatabaseUnavailable:
            if not self._deferred:
                log.warning("schedules_deferred")
            self._deferred = True
            return
        except Exception:
            log.exception("schedules_failed")
        self._deferred = False
