"""``MemoryJobStore``'s schedules: kept in a dict, fired through its own ``enqueue``.

The counterpart of ``schedules.py`` for the in-process store: the same
records, the same refusals, the same guard on a fire (the schedule as it was
read) and the same outcome written beside the job. Nothing here suspends
between the guard and the write, so a fire is one step on the event loop, as
it is one transaction on SQL.
"""

from __future__ import annotations

from dataclasses import replace

from app.core import errors
from app.core.job import Enqueued, NewJob
from app.core.schedule import Fire, Fired, ScheduleRecord, ScheduleSpec, fired


class MemorySchedules:
    """Schedules for a store whose ``enqueue`` admits jobs as intake does."""

    _schedules: dict[str, ScheduleRecord]

    async def enqueue(self, job: NewJob) -> Enqueued:
        raise NotImplementedError  # the store's own

    async def put_schedule(
        self, spec: ScheduleSpec, next_run_at: float | None, now: float
    ) -> tuple[ScheduleRecord, bool]:
        before = self._schedules.get(spec.name)
        record = ScheduleRecord(
            spec=replace(spec, headers=dict(spec.headers)),
            next_run_at=next_run_at,
            last_run_at=before.last_run_at if before else None,
            last_job_id=before.last_job_id if before else None,
            last_error=before.last_error if before else None,
            created_at=before.created_at if before else now,
            updated_at=now,
        )
        self._schedules[spec.name] = record
        return record, before is None

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        return self._schedules.get(name)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return [self._schedules[name] for name in sorted(self._schedules)]

    async def delete_schedule(self, name: str) -> None:
        if self._schedules.pop(name, None) is None:
            raise errors.NotFound(f"no schedule named '{name}'")

    async def due_schedules(self, now: float, *, limit: int) -> list[ScheduleRecord]:
        due = [s for s in self._schedules.values() if (s.next_run_at or now + 1) <= now]
        return sorted(due, key=lambda s: (s.next_run_at or 0.0, s.name))[:limit]

    async def fire_schedule(self, fire: Fire) -> Fired | None:
        current = self._schedules.get(fire.name)
        if current is None or (current.next_run_at, current.updated_at) != (
            fire.seen_next_run_at,
            fire.seen_updated_at,
        ):
            return None
        try:
            answer: Enqueued | errors.CsjdError = await self.enqueue(fire.job)
        except errors.CsjdError as exc:
            answer = exc
        outcome = fired(fire, answer)
        self._schedules[fire.name] = replace(
            current,
            next_run_at=fire.next_run_at,
            last_run_at=fire.fire_at,
            last_job_id=outcome.job.id if outcome.job else None,
            last_error=outcome.last_error,
        )
        return outcome
