"""``SqlJobStore``: the ``JobStore`` over SQLAlchemy Core, for SQLite and Postgres.

Writes go through one ``GroupCommitter`` (see ``group.py``); reads use their
own pool. The statements are written once (``statements.py``); where the
backends differ the store calls its ``Dialect`` (``dialect.py``) and never
asks which one it holds. Expected refusals (unknown target, reused key, full
backlog) are returned by operations as values and raised afterwards, so they
never roll back other callers' writes. This module holds the store's
lifecycle, its targets, its reads and the operator's commands; new jobs are
written by ``intake.py``, claims, completions and maintenance by
``delivery.py``, schedules by ``schedules.py``, and what all of them share
(reads retried after transient errors included) is in ``store.py``.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial
from typing import Any

from sqlalchemy import Select, TextualSelect, select, text

from app.core import errors
from app.core.attempt import AttemptRecord
from app.core.job import ACTIVE, TERMINAL, IllegalTransition, JobRecord, JobState
from app.core.target import TargetRecord, TargetSpec
from app.storage import ordering, statements
from app.storage.base import ATTEMPTS_PAGE, Activity, JobFilter
from app.storage.delivery import Delivery, next_due_in
from app.storage.endings import Ended
from app.storage.engine import Conn
from app.storage.group import Tx
from app.storage.models import attempts, jobs, targets
from app.storage.records import attempt_record, job_record, target_record, target_row
from app.storage.schedules import Schedules
from app.storage.statements import TARGET_BY_NAME, VERSIONS_CHUNK, count_query, list_query
from app.storage.store import raise_if_error


class SqlJobStore(Schedules, Delivery):
    """The ``JobStore`` on one SQL database, through the given ``Dialect``."""

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        await self._writer.start()
        self._active = await self._writer.run(self._count_active)

    async def close(self) -> None:
        await self._writer.stop()
        await self._database.close()

    async def ping(self) -> None:
        async def unit(conn: Conn) -> None:
            await conn.execute(text("SELECT 1"))

        await self._read(unit, budget_s=0.0)

    async def database_time(self) -> float:
        """The database server's clock, in epoch seconds (Postgres; else this host's)."""
        return await self._dialect.database_time(partial(self._read, budget_s=0.0))

    # -- targets -----------------------------------------------------------

    async def put_target(self, spec: TargetSpec, now: float) -> tuple[TargetRecord, bool]:
        parameters = target_row(spec, now)

        async def op(tx: Tx) -> tuple[TargetRecord, bool]:
            row, inserted = await self._dialect.upsert_target(tx.conn, parameters)
            return target_record(row), inserted

        return await self._writer.run(op, alone=True)

    async def replace_target(
        self, spec: TargetSpec, *, disabled_reason: str | None, seen: float, now: float
    ) -> TargetRecord | None:
        row = {**target_row(spec, now), "disabled_reason": disabled_reason}
        parameters = {f"new_{k}": v for k, v in row.items() if k not in ("name", "created_at")}
        parameters |= {"target": spec.name, "seen": seen}

        async def op(tx: Tx) -> TargetRecord | None:
            row = (await tx.conn.execute(statements.REPLACE_TARGET, parameters)).mappings().first()
            return None if row is None else target_record(row)

        return await self._writer.run(op, alone=True)

    async def get_target(self, name: str) -> TargetRecord | None:
        async def unit(conn: Conn) -> TargetRecord | None:
            row = (await conn.execute(TARGET_BY_NAME, {"name": name})).mappings().first()
            return None if row is None else target_record(row)

        return await self._read(unit)

    async def list_targets(self) -> list[TargetRecord]:
        async def unit(conn: Conn) -> list[TargetRecord]:
            rows = (await conn.execute(select(targets).order_by(targets.c.name))).mappings()
            return [target_record(row) for row in rows]

        return await self._read(unit)

    async def delete_target(self, name: str) -> None:
        """Delete a target no unfinished job names.

        The target's row is locked first, so no other replica's intake can add
        a job for it between the count and the delete (intake holds the targets
        it names until it commits). The lock is taken without waiting: a target
        intake holds right now is in use.
        """

        async def op(tx: Tx) -> errors.CsjdError | None:
            locked = await self._dialect.lock_target_for_delete(tx.conn, name)
            if not locked and await self._target_in_batch(tx, name) is not None:
                return errors.Conflict(
                    f"target '{name}' is taking jobs right now; try again",
                    retry_after_s=1,
                )
            busy = (await tx.conn.execute(statements.BUSY, {"t": name})).scalar_one()
            calling = (await tx.conn.execute(statements.CALLED_BACK_BY, {"t": name})).scalar_one()
            exists = (
                await tx.conn.execute(select(targets.c.name).where(targets.c.name == name))
            ).first()
            if exists is None:
                return errors.NotFound(f"no target named '{name}'")
            if calling and not busy:
                return errors.Conflict(
                    f"target '{name}' is the callback_target of {calling} unfinished jobs",
                    extensions={"unfinished_jobs": calling},
                )
            if busy:
                return errors.Conflict(
                    f"target '{name}' still has {busy} unfinished jobs",
                    extensions={"unfinished_jobs": busy},
                )
            for forget in statements.FORGET_TARGET:  # its counts go with it
                await tx.conn.execute(forget, {"t": name})
            await tx.conn.execute(targets.delete().where(targets.c.name == name))
            return None

        raise_if_error(await self._writer.run(op, alone=True))

    async def backlog_by_target(self) -> dict[str, dict[str, int]]:
        """The unfinished jobs of each target by state, as the writes keep them
        (``counts.py``): a row per target and state, however many jobs wait."""

        async def unit(conn: Conn) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for target, state, count in await conn.execute(statements.BACKLOG_KEPT):
                out.setdefault(target, {})[state] = int(count)
            return out

        return await self._read(unit)

    async def repair_backlog(self) -> dict[tuple[str, str], int]:
        """Count the backlog from the jobs, and correct the kept counts by what they
        are off (none, unless a write outside the store changed jobs).

        The jobs and the kept counts are read in one snapshot, where each write's
        jobs and counts are both there or both not; the difference is then added
        as any write's changes are, so writes committed meanwhile are kept. It
        reads every unfinished job's index entry: maintenance runs it now and then.
        """

        async def unit(conn: Conn) -> list[dict[tuple[str, str], int]]:
            await self._dialect.snapshot(conn)
            return [
                {(target, state): int(n) for target, state, n in await conn.execute(statement)}
                for statement in (statements.BACKLOG, statements.BACKLOG_KEPT)
            ]

        counted, kept = await self._read(unit)
        off = {
            key: n
            for key in counted.keys() | kept.keys()
            if (n := counted.get(key, 0) - kept.get(key, 0))
        }
        if off:

            async def op(tx: Tx) -> None:
                self._tally(tx).backlog.update(off)

            await self._writer.run(op)
        return off

    # -- reads ----------------------------------------------------------------

    async def get_job(self, caller: str | None, job_id: str) -> JobRecord | None:
        """The caller's job; ``caller=None`` finds anyone's (an admin, the dashboard)."""
        return await self._read(partial(self._get_job, caller=caller, job_id=job_id))

    async def list_jobs(
        self, filter: JobFilter, *, limit: int, before_id: str | None
    ) -> list[JobRecord]:
        """Newest first (by id)."""
        query = list_query(filter, limit=limit, before_id=before_id)

        async def unit(conn: Conn) -> list[JobRecord]:
            return [job_record(row) for row in (await conn.execute(query)).mappings()]

        return await self._read(unit)

    async def count_jobs(self, filter: JobFilter) -> int:
        query = count_query(filter)

        async def unit(conn: Conn) -> int:
            return int((await conn.execute(query)).scalar_one())

        return await self._read(unit)

    async def list_attempts(
        self, caller: str | None, job_id: str, *, after: int = 0, limit: int = ATTEMPTS_PAGE
    ) -> list[AttemptRecord] | None:
        """One page of a job's attempts, numbered above ``after``; a range scan of
        ``ix_attempts_job`` (job_id, n), however long the job's history."""

        async def unit(conn: Conn) -> list[AttemptRecord] | None:
            owner = (await conn.execute(_of(select(jobs.c.id), caller, job_id))).first()
            if owner is None:
                return None
            rows = (
                await conn.execute(
                    select(attempts)
                    .where(attempts.c.job_id == job_id, attempts.c.n > after)
                    .order_by(attempts.c.n, attempts.c.id)
                    .limit(limit)
                )
            ).mappings()
            return [attempt_record(row) for row in rows]

        return await self._read(unit)

    async def job_versions(self, job_ids: list[str]) -> dict[str, tuple[str, float]]:
        """(state, updated_at) of each of these jobs that exists."""

        async def unit(conn: Conn) -> dict[str, tuple[str, float]]:
            found: dict[str, tuple[str, float]] = {}
            # in chunks: the drivers cap the parameters of one statement
            for start in range(0, len(job_ids), VERSIONS_CHUNK):
                chunk = job_ids[start : start + VERSIONS_CHUNK]
                query = select(jobs.c.id, jobs.c.state, jobs.c.updated_at).where(
                    jobs.c.id.in_(chunk)
                )
                found.update(
                    (row.id, (row.state, row.updated_at)) for row in await conn.execute(query)
                )
            return found

        return await self._read(unit)

    async def activity(self, since: float, until: float) -> list[Activity]:
        """What each target's minutes that start from ``since`` to before ``until``
        saw, as the writes counted it (``counts.py``), so every process of a split
        gateway shows the same; a row per target and minute, never a job."""

        async def unit(conn: Conn) -> list[Activity]:
            rows = await conn.execute(statements.MINUTES, {"since": since, "until": until})
            return [
                Activity(
                    target=target,
                    minute=int(minute),
                    accepted=int(accepted),
                    succeeded=int(succeeded),
                    failed=int(failed),
                )
                for target, minute, accepted, succeeded, failed in rows
            ]

        return await self._read(unit)

    async def forget_minutes(self, before: float) -> int:
        async def op(tx: Tx) -> int:
            result = await tx.conn.execute(statements.FORGET_MINUTES, {"before": before})
            return int(result.rowcount)

        return await self._writer.run(op, alone=True)

    async def count_by_state(
        self, states: Collection[JobState] = tuple(JobState)
    ) -> dict[JobState, int]:
        """How many jobs are in each of ``states``. The unfinished ones are the
        backlog the writes keep per target (``counts.py``): a row per target and
        state. The finished ones are counted from their partial index, every job
        kept (``CSJD_RETENTION_S``), which is why maintenance counts those less
        often."""
        queries = [
            statement
            for group, statement in (
                (ACTIVE, statements.COUNT_ACTIVE_BY_STATE),
                (TERMINAL, statements.COUNT_FINISHED_BY_STATE),
            )
            if group & set(states)
        ]

        async def unit(conn: Conn) -> dict[JobState, int]:
            counts = dict.fromkeys(states, 0)
            for statement in queries:
                for state, count in await conn.execute(statement):
                    if JobState(state) in counts:
                        counts[JobState(state)] = int(count)
            return counts

        return await self._read(unit)

    async def next_due(self) -> float | None:
        return await self._read(next_due_in)

    # -- operator commands ------------------------------------------------------

    async def cancel(self, caller: str | None, job_id: str, now: float) -> JobRecord:
        lock, lock_params = _by_caller(self._statements.lock_job, caller, id=job_id)

        async def op(tx: Tx) -> JobRecord | errors.CsjdError:
            # the state it leaves, held until the commit (the counts need it)
            current = (await tx.conn.execute(lock, lock_params)).first()
            if current is None:
                return errors.NotFound(f"no job '{job_id}'")
            was = JobState(current.state)
            if was not in ACTIVE:
                job = await self._get_job(tx.conn, caller, job_id)
                if job is not None and was is JobState.CANCELLED and job.completed_at == now:
                    # this very cancel, committed by an earlier run whose answer was
                    # lost (and with it that run's count of unfinished jobs)
                    self._adjust_active(tx, -1)
                    return job
                return IllegalTransition.of(was, "cancelled")
            statement, params = _by_caller(
                statements.CANCEL, caller, id=job_id, now=now, was=was.value
            )
            row = (await tx.conn.execute(statement, params)).mappings().first()
            if row is None:
                return await self._why_not(tx.conn, caller, job_id, "cancel")
            self._adjust_active(tx, -1)
            tally = self._tally(tx)
            tally.moved(current.target, was, JobState.CANCELLED, now)
            job = job_record(row)
            if job.ordering_key is not None or job.callback_target is not None:
                ended = Ended(job.target, job.ordering_key, job.id, job.callback_target)
                await self._ended(tx, [ended], now)
            return job

        cancelled = raise_if_error(await self._writer.run(op, alone=True))
        self.on_change((job_id,))
        return cancelled

    async def retry(self, caller: str | None, job_id: str, now: float) -> JobRecord:
        statement, params = _by_caller(statements.RETRY, caller, id=job_id, now=now)
        lock, lock_params = _by_caller(self._statements.lock_job, caller, id=job_id)

        async def op(tx: Tx) -> JobRecord | errors.CsjdError:
            # the state it leaves, held until the commit (the counts need it)
            current = (await tx.conn.execute(lock, lock_params)).first()
            if current is None:
                return errors.NotFound(f"no job '{job_id}'")
            await self._hold_targets(tx, {current.target})  # against a delete
            if await self._target_in_batch(tx, current.target) is None:
                return errors.Conflict(f"the job's target '{current.target}' no longer exists")
            if self._pending_active(tx) + 1 > self._max_backlog:
                return errors.BacklogFull.at(self._max_backlog)
            row = (await tx.conn.execute(statement, params)).mappings().first()
            if row is None:
                return await self._why_not(tx.conn, caller, job_id, "operator_retry")
            self._adjust_active(tx, +1)
            tally = self._tally(tx)
            tally.moved(current.target, JobState(current.state), JobState.QUEUED, now)
            job = job_record(row)
            if job.ordering_key is not None:
                # sent again in its turn: at the end of its key's line
                job = (await ordering.join(tx.conn, self._lines, [job], tally, now))[job.id]
            return job

        retried = raise_if_error(await self._writer.run(op, alone=True))
        self.on_change((job_id,))
        return retried

    async def _get_job(self, conn: Conn, caller: str | None, job_id: str) -> JobRecord | None:
        statement = statements.JOB if caller is not None else statements.JOB_OF_ANYONE
        params = {"id": job_id, "caller": caller} if caller is not None else {"id": job_id}
        row = (await conn.execute(statement, params)).mappings().first()
        return None if row is None else job_record(row)

    async def _why_not(
        self, conn: Conn, caller: str | None, job_id: str, event: str
    ) -> errors.CsjdError:
        state = (await conn.execute(_of(select(jobs.c.state), caller, job_id))).scalar_one_or_none()
        if state is None:
            return errors.NotFound(f"no job '{job_id}'")
        verb = "cancelled" if event == "cancel" else "retried"
        return IllegalTransition.of(JobState(state), verb)


def _of(query: Select[Any], caller: str | None, job_id: str) -> Select[Any]:
    """``query`` of the job ``job_id``, if it is ``caller``'s (None: anyone's)."""
    query = query.where(jobs.c.id == job_id)
    return query if caller is None else query.where(jobs.c.caller == caller)


def _by_caller(
    statements_: tuple[TextualSelect, TextualSelect], caller: str | None, **params: Any
) -> tuple[TextualSelect, dict[str, Any]]:
    """Of a statement's two forms (the caller's job, anyone's), the one for ``caller``."""
    mine, anyones = statements_
    if caller is None:
        return anyones, params
    return mine, {**params, "caller": caller}
