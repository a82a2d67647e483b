"""Schedules in the SQL store: putting, reading and deleting them, and writing a fire.

A fire (``app/core/schedule.py: plan``) is written in one transaction of its
own: the schedule's row is locked (on Postgres without waiting: a replica
that finds another firing it passes it by) and checked against what the fire
was planned on; the job goes through intake's own batch (``intake.py``), so
its target, the backlog bound, the per-target counts and the idempotency key
all apply as to a producer's job; and the schedule moves on to its next fire
time with what this fire did. Whatever happens between, the job and the
schedule's move are committed together or not at all, and a fire run twice
meets its own key: never a second job.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select, text, update

from app.core import errors
from app.core.schedule import Fire, Fired, ScheduleRecord, ScheduleSpec, fired
from app.storage.engine import Conn
from app.storage.group import Tx
from app.storage.intake import Intake
from app.storage.models import schedules
from app.storage.records import schedule_record, schedule_row
from app.storage.store import raise_if_error

#: what a put writes over an existing schedule (its fires' outcome is kept)
_PUT_FIELDS = ("cron", "timezone", "target", "payload", "headers", "enabled", "next_run_at")
# (an UPDATE's parameters may not bear its columns' names: each is ``new_<column>``)
_REPLACE = (
    update(schedules)
    .where(schedules.c.name == bindparam("key"))
    .values({name: bindparam(f"new_{name}") for name in (*_PUT_FIELDS, "updated_at")})
    .returning(*schedules.c)
)
_BY_NAME = select(schedules).where(schedules.c.name == bindparam("name"))
_ALL = select(schedules).order_by(schedules.c.name)
_DUE = text(
    "SELECT * FROM schedules WHERE next_run_at IS NOT NULL AND next_run_at <= :now "
    "ORDER BY next_run_at LIMIT :limit"
).columns(*schedules.c)
_FIRED = (
    update(schedules)
    .where(schedules.c.name == bindparam("key"))
    .values(
        next_run_at=bindparam("new_next_run_at"),
        last_run_at=bindparam("new_last_run_at"),
        last_job_id=bindparam("new_last_job_id"),
        last_error=bindparam("new_last_error"),
    )
)


class Schedules(Intake):
    """The ``JobStore``'s schedules; a fire's job goes through ``Intake``."""

    async def put_schedule(
        self, spec: ScheduleSpec, next_run_at: float | None, now: float
    ) -> tuple[ScheduleRecord, bool]:
        row = schedule_row(spec, next_run_at, now)
        replacing = {f"new_{name}": row[name] for name in (*_PUT_FIELDS, "updated_at")}
        replacing["key"] = spec.name
        insert = (
            self._dialect.insert(schedules)
            .values(row)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(*schedules.c)
        )

        async def op(tx: Tx) -> tuple[ScheduleRecord, bool]:
            # replace, else insert; a replica that inserted between the two is replaced
            for statement, params, created in (
                (_REPLACE, replacing, False),
                (insert, {}, True),
                (_REPLACE, replacing, False),
            ):
                written = (await tx.conn.execute(statement, params)).mappings().first()
                if written is not None:
                    return schedule_record(written), created
            raise RuntimeError(f"schedule '{spec.name}' was neither replaced nor inserted")

        return await self._writer.run(op, alone=True)

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        async def unit(conn: Conn) -> ScheduleRecord | None:
            row = (await conn.execute(_BY_NAME, {"name": name})).mappings().first()
            return None if row is None else schedule_record(row)

        return await self._read(unit)

    async def list_schedules(self) -> list[ScheduleRecord]:
        async def unit(conn: Conn) -> list[ScheduleRecord]:
            return [schedule_record(row) for row in (await conn.execute(_ALL)).mappings()]

        return await self._read(unit)

    async def delete_schedule(self, name: str) -> None:
        async def op(tx: Tx) -> errors.CsjdError | None:
            deleted = await tx.conn.execute(schedules.delete().where(schedules.c.name == name))
            return None if deleted.rowcount else errors.NotFound(f"no schedule named '{name}'")

        raise_if_error(await self._writer.run(op, alone=True))

    async def due_schedules(self, now: float, *, limit: int) -> list[ScheduleRecord]:
        async def unit(conn: Conn) -> list[ScheduleRecord]:
            rows = await conn.execute(_DUE, {"now": now, "limit": limit})
            return [schedule_record(row) for row in rows.mappings()]

        return await self._read(unit)

    async def fire_schedule(self, fire: Fire) -> Fired | None:
        lock = text(
            "SELECT next_run_at, updated_at FROM schedules WHERE name = :name"
            + self._dialect.skip_locked
        )

        async def op(tx: Tx) -> Fired | None:
            seen = (await tx.conn.execute(lock, {"name": fire.name})).first()
            if seen is None or (seen.next_run_at, seen.updated_at) != (
                fire.seen_next_run_at,
                fire.seen_updated_at,
            ):
                return None  # fired by another, put again, deleted, or being fired now
            [answer] = await self._enqueue_batch(tx, [fire.job])
            outcome = fired(fire, answer)
            await tx.conn.execute(
                _FIRED,
                {
                    "key": fire.name,
                    "new_next_run_at": fire.next_run_at,
                    "new_last_run_at": fire.fire_at,
                    "new_last_job_id": outcome.job.id if outcome.job else None,
                    "new_last_error": outcome.last_error,
                },
            )
            return outcome

        return await self._writer.run(op, alone=True)
