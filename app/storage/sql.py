"""``SqlJobStore``: the ``JobStore`` over SQLAlchemy Core, for SQLite and Postgres.

Writes go through one ``GroupCommitter`` (see ``group.py``); reads use their
own pool. The statements are written once (``statements.py``); where the
backends differ the store calls its ``Dialect`` (``dialect.py``) and never
asks which one it holds. Expected refusals (unknown target, reused key, full
backlog) are returned by operations as values and raised afterwards, so they
never roll back other callers' writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import partial
from itertools import chain
from typing import Any, TypeVar

from sqlalchemy import (
    RowMapping,
    select,
    text,
    update,
)

from app.core import errors
from app.core.attempt import AttemptRecord, Completion, rescued
from app.core.job import (
    ACTIVE,
    TERMINAL,
    Enqueued,
    IllegalTransition,
    JobRecord,
    JobState,
    NewJob,
    admit,
)
from app.core.retry import Random
from app.core.target import Effects, TargetRecord, TargetSpec, effects
from app.storage import statements
from app.storage.base import ATTEMPTS_PAGE, Activity, ClaimRequest
from app.storage.dialect import Dialect
from app.storage.engine import Conn, Database, Unit
from app.storage.faults import Fault, classify
from app.storage.group import (
    FIRST_BACKOFF_S,
    MAX_BACKOFF_S,
    GroupCommitter,
    Tx,
    unavailable,
)
from app.storage.models import attempts, jobs, targets
from app.storage.records import (
    attempt_record,
    attempt_row,
    completion_params,
    job_record,
    job_row,
    target_record,
    target_row,
)
from app.storage.statements import (
    COMPLETE_CHUNK,
    PURGE_BATCH,
    TARGET_BY_NAME,
    VERSIONS_CHUNK,
    Statements,
    activity_params,
    list_query,
)

T = TypeVar("T")

_ACTIVE_DELTA = "active_delta"
#: how long a read is tried again after transient errors before it answers 503
READ_BUDGET_S = 1.0


def _raise_if_error(result: T | errors.CsjdError) -> T:
    if isinstance(result, errors.CsjdError):
        raise result
    return result


def _no_one_listens(job_ids: Iterable[str] | None) -> None:
    pass


class SqlJobStore:
    def __init__(self, database: Database, dialect: Dialect, *, max_backlog: int) -> None:
        #: told, after each commit, which jobs changed state (None: some, unknown which)
        self.on_change: Callable[[Iterable[str] | None], None] = _no_one_listens
        self._database = database
        self._dialect = dialect
        self._statements = Statements.build(dialect)
        self._writer = GroupCommitter(database)
        self._max_backlog = max_backlog
        self._active = 0

    @property
    def shared(self) -> bool:
        """Whether other processes write to this database too (counts go stale)."""
        return self._dialect.shared

    @property
    def database(self) -> Database:
        return self._database

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def statements(self) -> Statements:
        return self._statements

    @property
    def committer(self) -> GroupCommitter:
        return self._writer

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

    async def _read(self, unit: Unit[T], *, budget_s: float = READ_BUDGET_S) -> T:
        """``unit`` on a reader, run again after transient errors for ``budget_s``;
        then ``DatabaseUnavailable``. No driver error leaves the store."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                return await self._database.read(unit)
            except Exception as exc:
                fault = classify(exc)
                if fault is Fault.REFUSED:
                    # a value no query can hold (a NUL byte in an id): the asker's
                    raise errors.BadRequest("the database refused a value of this request") from exc
                if fault is not Fault.TRANSIENT:
                    raise
                if loop.time() + backoff > deadline:
                    raise unavailable(exc) from exc
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def database_time(self) -> float:
        """The database server's clock, in epoch seconds (Postgres; else this host's)."""
        return await self._dialect.database_time(partial(self._read, budget_s=0.0))

    @property
    def active(self) -> int:
        """Non-terminal jobs, as this process counts them."""
        return self._active

    async def recount(self) -> int:
        self._active = await self._writer.run(self._count_active)
        return self._active

    async def _count_active(self, tx: Tx) -> int:
        return int((await tx.conn.execute(statements.COUNT_ACTIVE)).scalar_one())

    def _adjust_active(self, tx: Tx, delta: int) -> None:
        if delta:
            tx.batch[_ACTIVE_DELTA] = tx.batch.get(_ACTIVE_DELTA, 0) + delta

            def apply() -> None:
                self._active += delta

            tx.after_commit.append(apply)

    def _pending_active(self, tx: Tx) -> int:
        return self._active + int(tx.batch.get(_ACTIVE_DELTA, 0))

    # -- targets -----------------------------------------------------------

    async def put_target(self, spec: TargetSpec, now: float) -> tuple[TargetRecord, bool]:
        parameters = target_row(spec, now)

        async def op(tx: Tx) -> tuple[TargetRecord, bool]:
            row, inserted = await self._dialect.upsert_target(tx.conn, parameters)
            return target_record(row), inserted

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
            exists = (
                await tx.conn.execute(select(targets.c.name).where(targets.c.name == name))
            ).first()
            if exists is None:
                return errors.NotFound(f"no target named '{name}'")
            if busy:
                return errors.Conflict(
                    f"target '{name}' still has {busy} unfinished jobs",
                    extensions={"unfinished_jobs": busy},
                )
            await tx.conn.execute(targets.delete().where(targets.c.name == name))
            return None

        _raise_if_error(await self._writer.run(op, alone=True))

    async def backlog_by_target(self) -> dict[str, dict[str, int]]:
        async def unit(conn: Conn) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for target, state, count in await conn.execute(statements.BACKLOG):
                out.setdefault(target, {})[state] = int(count)
            return out

        return await self._read(unit)

    # -- intake --------------------------------------------------------------

    async def enqueue(self, job: NewJob) -> Enqueued:
        result = await self._writer.run_batched(self._enqueue_batch, job)
        return _raise_if_error(result)  # type: ignore[no-any-return]

    async def _enqueue_batch(
        self, tx: Tx, batch: list[NewJob]
    ) -> list[Enqueued | errors.CsjdError]:
        results: list[Enqueued | errors.CsjdError | None] = [None] * len(batch)
        rows: list[dict[str, Any]] = []
        admitted: list[JobRecord] = []
        positions: list[int] = []
        await self._hold_targets(tx, {job.target for job in batch})
        for i, job in enumerate(batch):
            if job.refusal is not None:
                # refused as a new job; a stored job with this key still answers
                results[i] = job.refusal
                continue
            target = await self._target_in_batch(tx, job.target)
            if target is None:
                results[i] = errors.UnknownTarget(
                    f"no target named '{job.target}'", extensions={"target": job.target}
                )
                continue
            if self._pending_active(tx) + len(rows) + 1 > self._max_backlog:
                results[i] = errors.BacklogFull(
                    f"the backlog holds its maximum of {self._max_backlog} unfinished jobs",
                    retry_after_s=5,
                )
                continue
            record = admit(job, target.spec)
            admitted.append(record)
            rows.append(job_row(record, job.fingerprint))
            positions.append(i)
        inserted: set[str] = set()
        if rows:
            # Replicas insert keys in one order: two batches sharing keys wait on
            # each other's unique-index entries, never in a cycle.
            ordered = sorted(rows, key=lambda r: (r["caller"], r["idempotency_key"]))
            insert = self._statements.insert_jobs
            inserted = {row[0] for row in await tx.conn.execute(insert, ordered)}
            self._adjust_active(tx, len(inserted))
            if inserted:
                await self._dialect.notify_jobs(tx.conn)
        for record, i in zip(admitted, positions, strict=True):
            if record.id in inserted:
                results[i] = Enqueued(job=record, replayed=False)
        # Everything not created may be a replay: a key already stored wins over
        # any refusal, so a producer retrying a stored job always hears 202.
        undecided = [i for i, r in enumerate(results) if not isinstance(r, Enqueued)]
        if undecided:
            existing = await self._rows_by_key(tx.conn, [batch[i] for i in undecided])
            for i in undecided:
                job = batch[i]
                row = existing.get((job.caller, job.idempotency_key))
                if row is None:
                    # only a refusal, or a conflict with a writer not yet committed
                    results[i] = results[i] or errors.KeyInFlight(
                        "a request with this key is still being stored", retry_after_s=1
                    )
                elif row["id"] == job.id:
                    # this very request, stored by an earlier run of this batch whose
                    # commit was cut off before its answer (a dropped connection)
                    self._adjust_active(tx, 1)
                    results[i] = Enqueued(job=job_record(row), replayed=False)
                elif row["fingerprint"] != job.fingerprint:
                    results[i] = _key_reused(job, row)
                else:
                    results[i] = Enqueued(job=job_record(row), replayed=True)
        return [r for r in results if r is not None]

    async def _rows_by_key(
        self, conn: Conn, batch: list[NewJob]
    ) -> dict[tuple[str, str], RowMapping]:
        by_caller: dict[str, set[str]] = {}
        for job in batch:
            by_caller.setdefault(job.caller, set()).add(job.idempotency_key)
        found: dict[tuple[str, str], RowMapping] = {}
        for caller, keys in by_caller.items():
            rows = await conn.execute(
                select(jobs).where(jobs.c.caller == caller, jobs.c.idempotency_key.in_(keys))
            )
            for row in rows.mappings():
                found[(caller, row["idempotency_key"])] = row
        return found

    async def _hold_targets(self, tx: Tx, names: set[str]) -> None:
        """Hold the named targets against a delete, and cache what the dialect read."""
        cache: dict[str, TargetRecord | None] = tx.batch.setdefault("targets", {})
        for name, row in (await self._dialect.hold_targets(tx.conn, names)).items():
            cache[name] = None if row is None else target_record(row)

    async def _target_in_batch(self, tx: Tx, name: str) -> TargetRecord | None:
        cache: dict[str, TargetRecord | None] = tx.batch.setdefault("targets", {})
        if name not in cache:
            row = (await tx.conn.execute(TARGET_BY_NAME, {"name": name})).mappings().first()
            cache[name] = None if row is None else target_record(row)
        return cache[name]

    # -- reads ----------------------------------------------------------------

    async def get_job(self, caller: str | None, job_id: str) -> JobRecord | None:
        """The caller's job; ``caller=None`` finds anyone's (the dashboard, an admin tool)."""
        statement = statements.JOB if caller is not None else statements.JOB_OF_ANYONE

        async def unit(conn: Conn) -> JobRecord | None:
            params = {"id": job_id, "caller": caller} if caller is not None else {"id": job_id}
            row = (await conn.execute(statement, params)).mappings().first()
            return None if row is None else job_record(row)

        return await self._read(unit)

    async def list_jobs(
        self,
        caller: str | None,
        *,
        state: JobState | None,
        target: str | None,
        limit: int,
        before_id: str | None,
    ) -> list[JobRecord]:
        """Newest first; ``caller=None`` lists every caller's jobs."""
        query = list_query(caller, state=state, target=target, limit=limit, before_id=before_id)

        async def unit(conn: Conn) -> list[JobRecord]:
            return [job_record(row) for row in (await conn.execute(query)).mappings()]

        return await self._read(unit)

    async def list_attempts(
        self, caller: str, job_id: str, *, after: int = 0, limit: int = ATTEMPTS_PAGE
    ) -> list[AttemptRecord] | None:
        """One page of a job's attempts, numbered above ``after``; a range scan of
        ``ix_attempts_job`` (job_id, n), however long the job's history."""

        async def unit(conn: Conn) -> list[AttemptRecord] | None:
            owner = (
                await conn.execute(
                    select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.caller == caller)
                )
            ).first()
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

    async def activity(self, since: float, until: float, bucket_s: float) -> list[Activity]:
        """Jobs accepted, and jobs finished (succeeded or failed), per target and per
        ``bucket_s`` from ``since`` to ``until``: what the dashboard's throughput shows.

        Counted from the rows themselves, so every process of a split gateway sees
        the same numbers. Accepted jobs are found by id (ids are UUIDv7 made from
        the creation time, so the primary key bounds them); finished ones by the
        index on ``completed_at``. A job retried and finished again counts once.
        """
        params = activity_params(since, until, bucket_s)
        accepted = self._statements.activity_accepted
        finished = self._statements.activity_finished

        async def unit(conn: Conn) -> list[Activity]:
            out = [
                Activity(target=target, kind="accepted", bucket=int(b), count=int(n))
                for target, b, n in await conn.execute(accepted, params)
            ]
            out += [
                Activity(target=target, kind=state, bucket=int(b), count=int(n))
                for target, state, b, n in await conn.execute(finished, params)
            ]
            return out

        return await self._read(unit)

    async def count_by_state(
        self, states: Collection[JobState] = tuple(JobState)
    ) -> dict[JobState, int]:
        """How many jobs are in each of ``states``. Each set of states is counted from
        its own partial index: the unfinished ones read the backlog's index entries,
        the finished ones those of every job kept (``CSJD_RETENTION_S``), which is
        why maintenance counts those less often."""
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
        async def unit(conn: Conn) -> float | None:
            value = (await conn.execute(statements.NEXT_DUE)).scalar_one_or_none()
            return None if value is None else float(value)

        return await self._read(unit)

    # -- operator commands ------------------------------------------------------

    async def cancel(self, caller: str, job_id: str, now: float) -> JobRecord:
        async def op(tx: Tx) -> JobRecord | errors.CsjdError:
            row = (
                (
                    await tx.conn.execute(
                        statements.CANCEL, {"id": job_id, "caller": caller, "now": now}
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                current = await self._get_job(tx.conn, caller, job_id)
                if (
                    current is not None
                    and current.state is JobState.CANCELLED
                    and current.completed_at == now
                ):
                    # this very cancel, committed by an earlier run whose answer was
                    # lost (and with it that run's count of unfinished jobs)
                    self._adjust_active(tx, -1)
                    return current
                return await self._why_not(tx.conn, caller, job_id, "cancel")
            self._adjust_active(tx, -1)
            return job_record(row)

        cancelled = _raise_if_error(await self._writer.run(op, alone=True))
        self.on_change((job_id,))
        return cancelled

    async def retry(self, caller: str, job_id: str, now: float) -> JobRecord:
        async def op(tx: Tx) -> JobRecord | errors.CsjdError:
            current = (
                await tx.conn.execute(
                    select(jobs.c.target, jobs.c.state).where(
                        jobs.c.id == job_id, jobs.c.caller == caller
                    )
                )
            ).first()
            if current is None:
                return errors.NotFound(f"no job '{job_id}'")
            await self._hold_targets(tx, {current.target})  # against a delete
            if await self._target_in_batch(tx, current.target) is None:
                return errors.Conflict(f"the job's target '{current.target}' no longer exists")
            if self._pending_active(tx) + 1 > self._max_backlog:
                return errors.BacklogFull(
                    f"the backlog holds its maximum of {self._max_backlog} unfinished jobs",
                    retry_after_s=5,
                )
            row = (
                (
                    await tx.conn.execute(
                        statements.RETRY, {"id": job_id, "caller": caller, "now": now}
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return await self._why_not(tx.conn, caller, job_id, "operator_retry")
            self._adjust_active(tx, +1)
            return job_record(row)

        retried = _raise_if_error(await self._writer.run(op, alone=True))
        self.on_change((job_id,))
        return retried

    async def _get_job(self, conn: Conn, caller: str, job_id: str) -> JobRecord | None:
        row = (
            (await conn.execute(statements.JOB, {"id": job_id, "caller": caller}))
            .mappings()
            .first()
        )
        return None if row is None else job_record(row)

    async def _why_not(self, conn: Conn, caller: str, job_id: str, event: str) -> errors.CsjdError:
        state = (
            await conn.execute(
                select(jobs.c.state).where(jobs.c.id == job_id, jobs.c.caller == caller)
            )
        ).scalar_one_or_none()
        if state is None:
            return errors.NotFound(f"no job '{job_id}'")
        verb = "cancelled" if event == "cancel" else "retried"
        return IllegalTransition(f"a {state} job cannot be {verb}", extensions={"state": state})

    # -- dispatch -----------------------------------------------------------------

    async def claim(
        self, requests: Sequence[ClaimRequest], now: float, lease_s: Mapping[str, float]
    ) -> list[JobRecord]:
        runs = 0

        async def op(tx: Tx) -> tuple[list[JobRecord], list[str]]:
            nonlocal runs
            runs += 1
            if runs > 1:
                # Run again after an error: if that was a commit cut off after the
                # server made it, these jobs are already this claim's (claimed_at is
                # this call's own reading of the clock), and nobody else will start them.
                earlier = (
                    (await tx.conn.execute(statements.CLAIMED_AT, {"now": now})).mappings().all()
                )
                if earlier:
                    return [job_record(row) for row in earlier], []
            promote = self._statements.promote
            promoted = [row[0] for row in await tx.conn.execute(promote, {"now": now})]
            claimed: list[JobRecord] = []
            for request in sorted(requests, key=lambda r: r.target):
                limit = await self._dialect.claim_room(tx.conn, request.target, request.limit)
                if limit <= 0:
                    continue
                rows = (
                    await tx.conn.execute(
                        self._statements.claim,
                        {
                            "now": now,
                            "target": request.target,
                            "limit": limit,
                            "retries": limit if request.retries is None else request.retries,
                            "lease_expires_at": now + lease_s[request.target],
                        },
                    )
                ).mappings()
                claimed.extend(job_record(row) for row in rows)
            claimed.sort(key=lambda job: (job.next_attempt_at or 0.0, job.id))
            return claimed, promoted

        claimed, promoted = await self._writer.run(op)
        if promoted or claimed:
            self.on_change(chain(promoted, (job.id for job in claimed)))
        return claimed

    async def complete(self, completion: Completion) -> bool:
        written: bool = await self._writer.run_batched(self._complete_batch, completion)
        if written:
            self.on_change((completion.job_id,))
        return written

    async def _complete_batch(self, tx: Tx, batch: list[Completion]) -> list[bool]:
        """Write many attempts' results in a few statements; stale ones change nothing."""
        params = [completion_params(c) for c in batch]
        matched: set[str] = set()
        for start in range(0, len(batch), COMPLETE_CHUNK):
            chunk = params[start : start + COMPLETE_CHUNK]
            sql = statements.complete_running(self._dialect, len(chunk))
            args = tuple(p[f] for p in chunk for f in statements.COMPLETE_FIELDS)
            matched.update(row[0] for row in (await tx.conn.exec_driver_sql(sql, args)).all())
        written: list[bool] = []
        finished = 0
        for c, p in zip(batch, params, strict=True):
            if c.job_id in matched:
                written.append(True)
                finished += c.decision.state not in ACTIVE
            else:
                # rare: cancelled while the attempt ran (recorded, stays cancelled), or stale
                written.append(
                    bool((await tx.conn.execute(statements.COMPLETE_CANCELLED, p)).rowcount)
                )
        self._adjust_active(tx, -finished)
        rows = [attempt_row(c) for c, ok in zip(batch, written, strict=True) if ok and c.attempt]
        if rows:
            await tx.conn.execute(statements.INSERT_ATTEMPTS, rows)
        for c, ok in zip(batch, written, strict=True):
            change = effects(c.decision, c.attempt.status_code if c.attempt else None)
            if ok and change is not None:
                # target rows last, in name order: see group.py on lock order
                tx.at_end(c.target, partial(_write_target_effects, c.target, change, c.now))
        return written

    async def extend_leases(self, leases: Mapping[str, int], until: float) -> int:
        """Push out the leases of attempts still running (guarded by their tokens)."""

        async def op(tx: Tx) -> int:
            items = list(leases.items())
            extended = 0
            for start in range(0, len(items), COMPLETE_CHUNK):
                chunk = items[start : start + COMPLETE_CHUNK]
                sql = statements.extend_leases(self._dialect, len(chunk))
                # (rowcount is -1 for a statement that starts with WITH)
                args = (*(x for pair in chunk for x in pair), until)
                extended += len((await tx.conn.exec_driver_sql(sql, args)).all())
            return extended

        return await self._writer.run(op)

    async def try_lead(self, duty: str, holder: str, now: float, ttl_s: float) -> bool:
        """Take or keep the lease on ``duty``; True while ``holder`` leads it."""

        async def op(tx: Tx) -> bool:
            row = (
                await tx.conn.execute(
                    statements.LEAD,
                    {"name": duty, "holder": holder, "until": now + ttl_s, "now": now},
                )
            ).first()
            return row is not None

        return await self._writer.run(op, alone=True)

    async def fail_expired(self, now: float) -> int:
        async def op(tx: Tx) -> int:
            statement = self._statements.fail_expired
            count = int((await tx.conn.execute(statement, {"now": now})).rowcount)
            self._adjust_active(tx, -count)
            return count

        expired = await self._writer.run(op, alone=True)
        if expired:
            self.on_change(None)
        return expired

    async def rescue(
        self, now: float, rng: Random, *, expired_only: bool = False, grace_s: float = 0.0
    ) -> int:
        """Bring back attempts whose worker is gone (counted, ``interrupted``).

        Alone on SQLite at start, every leased job is orphaned
        (``expired_only=False``); otherwise only those whose lease ran out more
        than ``grace_s`` ago (their attempt's deadline is
        long past; the grace lets a live holder that lost the database for a
        while renew or complete first). Each write re-checks that the lease
        still lapsed, so a lease renewed meanwhile is left alone.
        """
        before = now - grace_s if expired_only else float("inf")

        async def op(tx: Tx) -> int:
            stale = self._statements.stale_running
            rows = (await tx.conn.execute(stale, {"before": before})).mappings().all()
            completions: list[Completion] = []
            for row in rows:
                job = job_record(row)
                target = await self._target_in_batch(tx, job.target)
                completions.append(
                    rescued(
                        job,
                        target.spec if target else None,
                        now,
                        rng,
                        lapsed_before=before if expired_only else None,
                    )
                )
            return sum(await self._complete_batch(tx, completions))

        count = await self._writer.run(op, alone=True)
        if count:
            self.on_change(None)
        return count

    async def purge(self, completed_before: float) -> int:
        async def op(tx: Tx) -> int:
            params = {"before": completed_before, "limit": PURGE_BATCH}
            await tx.conn.execute(self._statements.purge_attempts, params)
            purge_jobs = self._statements.purge_jobs
            return int((await tx.conn.execute(purge_jobs, params)).rowcount)

        total = 0
        while (count := await self._writer.run(op, alone=True)) > 0:
            total += count
            if count < PURGE_BATCH:
                break
        return total


async def _write_target_effects(target: str, change: Effects, now: float, conn: Conn) -> None:
    if change.pause_until is not None:
        await conn.execute(statements.PAUSE_TARGET, {"until": change.pause_until, "name": target})
    if change.disabled_reason is not None:
        await conn.execute(
            update(targets)
            .where(targets.c.name == target)
            .values(enabled=False, disabled_reason=change.disabled_reason, updated_at=now)
        )


def _key_reused(job: NewJob, row: RowMapping) -> errors.CsjdError:
    return errors.IdempotencyKeyReused(
        f"Idempotency-Key '{job.idempotency_key}' was used for a different request "
        f"(job {row['id']})",
        extensions={"job_id": row["id"]},
    )
