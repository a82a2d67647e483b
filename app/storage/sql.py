"""``SqlJobStore``: the ``JobStore`` over SQLAlchemy Core, for SQLite and Postgres.

Writes go through one ``GroupCommitter`` (see ``group.py``); reads use their
own pool. Hot-path statements are plain SQL with literal state names so that
the partial indexes of ``models.py`` match them. Expected refusals (unknown
target, reused key, full backlog) are returned by operations as values and
raised afterwards, so they never roll back other callers' writes.

Plans. Each hot statement is written for one index (``models.py``) and
``tests/storage/test_plans.py`` checks that both backends use it. Postgres
plans from the statistics that autovacuum keeps. SQLite is never analysed:
statistics are a snapshot, and a snapshot taken while the backlog was empty
(or all finished) would keep steering the planner after the table changed
shape, while without them its choices follow from the statements and the
indexes alone and do not drift. So the statements carry what the planner
needs: a set of states is named with the exact term of its partial index,
and a term that must not lead to an index is written so that it cannot
(``NOT IN``, a closed range where an open one lost to a scan).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import partial
from itertools import chain
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    RowMapping,
    Select,
    TextClause,
    bindparam,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

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
from app.core.target import SPEC_FIELDS, Effects, TargetRecord, TargetSpec, effects
from app.storage.base import ATTEMPTS_PAGE, Activity, ClaimRequest
from app.storage.engine import Conn, Database, Unit
from app.storage.faults import Fault, classify
from app.storage.group import (
    FIRST_BACKOFF_S,
    MAX_BACKOFF_S,
    GroupCommitter,
    Tx,
    unavailable,
)
from app.storage.models import ACTIVE_SQL, FINISHED_SQL, attempts, jobs, targets
from app.storage.records import (
    attempt_record,
    attempt_row,
    completion_params,
    job_record,
    job_row,
    target_record,
    target_row,
)

T = TypeVar("T")

_COLUMNS = ", ".join(c.name for c in jobs.c)
_ACTIVE_DELTA = "active_delta"

# The (caller, idempotency_key) constraint, not a read, decides who made the job;
# executed with many rows, SQLAlchemy sends them as multi-row INSERTs.
_INSERT_SQLITE = (
    sqlite.insert(jobs)
    .on_conflict_do_nothing(index_elements=["caller", "idempotency_key"])
    .returning(jobs.c.id)
)
_INSERT_PG = (
    postgresql.insert(jobs)
    .on_conflict_do_nothing(index_elements=["caller", "idempotency_key"])
    .returning(jobs.c.id)
)
_PROMOTE = text(
    "UPDATE jobs SET state = 'queued', updated_at = :now "
    "WHERE state IN ('scheduled', 'retrying') AND next_attempt_at <= :now RETURNING id"
)
#: due jobs one claim round promotes on Postgres (the rest in the next rounds), so
#: a mass of jobs coming due together does not hold the claim's transaction long
PROMOTE_BATCH = 10_000
# Replicas promote at once: each takes the rows no other is promoting, never waits.
_PROMOTE_PG = text(
    "UPDATE jobs SET state = 'queued', updated_at = :now WHERE id IN (SELECT id FROM jobs "
    "WHERE state IN ('scheduled', 'retrying') AND next_attempt_at <= :now "
    f"LIMIT {PROMOTE_BATCH} FOR UPDATE SKIP LOCKED) RETURNING id"
)
# First attempts and retries are read apart, each along its own partial index,
# so a bound on retries never makes a claim walk past retries left waiting (nor
# past first attempts); together they keep the order in which jobs came due.
_CLAIM_SQL = (
    "UPDATE jobs SET state = 'running', deliveries = deliveries + 1, claimed_at = :now, "
    "lease_expires_at = :lease_expires_at, updated_at = :now "
    "WHERE id IN (SELECT id FROM ("
    "SELECT id, next_attempt_at FROM (SELECT id, next_attempt_at FROM jobs "
    "WHERE state = 'queued' AND deliveries = 0 AND target = :target "
    "ORDER BY next_attempt_at LIMIT :limit{lock}) AS firsts "
    "UNION ALL "
    "SELECT id, next_attempt_at FROM (SELECT id, next_attempt_at FROM jobs "
    "WHERE state = 'queued' AND deliveries > 0 AND target = :target "
    "ORDER BY next_attempt_at LIMIT :retries{lock}) AS retries"
    ") AS due ORDER BY next_attempt_at LIMIT :limit) "
    f"RETURNING {_COLUMNS}"
)
_CLAIM = text(_CLAIM_SQL.format(lock="")).columns(*jobs.c)
_CLAIMED_AT = text(
    f"SELECT {_COLUMNS} FROM jobs WHERE lease_expires_at IS NOT NULL AND claimed_at = :now "
    "AND state = 'running'"
).columns(*jobs.c)
# Replicas skip rows another replica is claiming instead of waiting for them.
_CLAIM_PG = text(_CLAIM_SQL.format(lock=" FOR UPDATE SKIP LOCKED")).columns(*jobs.c)
# A target's max_concurrency holds across replicas: one replica at a time
# counts a target's running jobs and claims (a transaction-scoped advisory
# lock); a replica that finds it taken skips the target this round instead of
# waiting, and the one that holds it commits its claim within milliseconds.
CLAIM_LOCK_CLASS = 0x63736A64  # "csjd"
_TARGET_ROOM_PG = text(
    "SELECT CASE WHEN pg_try_advisory_xact_lock(:lock_class, hashtext(t.name)) "
    "THEN t.max_concurrency - (SELECT count(*) FROM jobs "
    "WHERE jobs.target = t.name AND jobs.state = 'running') ELSE 0 END "
    "FROM targets t WHERE t.name = :target"
)
# Intake holds the targets it names against a delete (which locks FOR UPDATE)
# until its jobs are committed; key-share locks conflict with nothing else.
_LOCK_TARGETS_PG = text(
    "SELECT * FROM targets WHERE name IN :names ORDER BY name FOR KEY SHARE"
).bindparams(bindparam("names", expanding=True))
_LOCK_TARGET_FOR_DELETE_PG = text(
    "SELECT name FROM targets WHERE name = :name FOR UPDATE SKIP LOCKED"
)
_DATABASE_TIME_PG = text("SELECT extract(epoch FROM clock_timestamp())::float8")
_NOTIFY_PG = text("SELECT pg_notify('csjd_jobs', '')")
# One row per duty: the holder renews it; anyone may take it once it lapsed.
_LEAD = text(
    "INSERT INTO leaders (name, holder, expires_at) VALUES (:name, :holder, :until) "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
    "expires_at = excluded.expires_at "
    "WHERE leaders.holder = excluded.holder OR leaders.expires_at < :now "
    "RETURNING holder"
)
# A job cancelled while its attempt ran: record the attempt, keep it cancelled.
_COMPLETE_CANCELLED = text(
    "UPDATE jobs SET attempts = :attempts, "
    "last_status_code = CASE WHEN :recorded = 1 THEN :status_code ELSE last_status_code END, "
    "last_error = CASE WHEN :recorded = 1 THEN :error ELSE last_error END, "
    "lease_expires_at = NULL, updated_at = :now "
    "WHERE id = :id AND deliveries = :delivery AND state = 'cancelled' "
    "AND lease_expires_at IS NOT NULL AND (CAST(:lapsed_before AS DOUBLE PRECISION) IS NULL "
    "OR lease_expires_at < CAST(:lapsed_before AS DOUBLE PRECISION))"
)
_FAIL_EXPIRED_SQL = (
    "UPDATE jobs SET state = 'failed', failure_reason = 'expired', completed_at = :now, "
    "next_attempt_at = NULL, updated_at = :now "
    "WHERE {where}"
)
_EXPIRED = "state IN ('scheduled', 'queued', 'retrying') AND expires_at <= :now"
_FAIL_EXPIRED = text(_FAIL_EXPIRED_SQL.format(where=_EXPIRED))
_FAIL_EXPIRED_PG = text(
    _FAIL_EXPIRED_SQL.format(
        where=f"id IN (SELECT id FROM jobs WHERE {_EXPIRED} FOR UPDATE SKIP LOCKED)"
    )
)
# One statement completes a whole chunk of attempts (UPDATE ... FROM a VALUES
# list); the guard on the delivery number (the lease token) and state makes stale rows
# match nothing, and RETURNING says which rows were written.
_COMPLETE_FIELDS = (
    "id",
    "delivery",
    "state",
    "attempts",
    "next_attempt_at",
    "completed_at",
    "failure_reason",
    "recorded",
    "status_code",
    "error",
    "now",
    "unsent",
    "lapsed_before",
)
_COMPLETE_SQL_HEAD = f"WITH v({', '.join(_COMPLETE_FIELDS)}) AS (VALUES "
_COMPLETE_SQL_TAIL = (
    ") UPDATE jobs SET state = v.state, attempts = v.attempts, "
    "next_attempt_at = v.next_attempt_at, completed_at = v.completed_at, "
    "failure_reason = v.failure_reason, "
    "last_status_code = CASE WHEN v.recorded = 1 THEN v.status_code "
    "ELSE jobs.last_status_code END, "
    "last_error = CASE WHEN v.recorded = 1 THEN v.error ELSE jobs.last_error END, "
    "lease_expires_at = NULL, updated_at = v.now, deliveries = jobs.deliveries - v.unsent "
    "FROM v WHERE jobs.id = v.id AND jobs.deliveries = v.delivery AND jobs.state = 'running' "
    # a rescue writes only over a lease still lapsed (a heartbeat may have renewed it)
    "AND (v.lapsed_before IS NULL OR jobs.lease_expires_at < v.lapsed_before) "
    "RETURNING jobs.id"
)
_COMPLETE_TYPES = (
    "varchar",
    "int",
    "varchar",
    "int",
    "float8",
    "float8",
    "varchar",
    "int",
    "int",
    "varchar",
    "float8",
    "int",
    "float8",
)
COMPLETE_CHUNK = 500
#: watched jobs whose versions one statement reads
VERSIONS_CHUNK = 500


def values_rows(conn: Conn, rows: int, types: Sequence[str], start: int = 1) -> str:
    """``(?, ?), (?, ?)`` for SQLite; numbered and typed ``($1::int, …)`` for Postgres,
    which cannot infer the types of parameters in a VALUES list."""
    width = len(types)
    if conn.dialect.name != "postgresql":
        return ", ".join(["(" + ", ".join("?" * width) + ")"] * rows)
    return ", ".join(
        "(" + ", ".join(f"${start + r * width + i}::{t}" for i, t in enumerate(types)) + ")"
        for r in range(rows)
    )


def placeholder(conn: Conn, n: int, type_: str) -> str:
    return f"${n}::{type_}" if conn.dialect.name == "postgresql" else "?"


async def _complete_running(conn: Conn, chunk: list[dict[str, Any]]) -> Any:
    sql = _COMPLETE_SQL_HEAD + values_rows(conn, len(chunk), _COMPLETE_TYPES) + _COMPLETE_SQL_TAIL
    args = tuple(p[f] for p in chunk for f in _COMPLETE_FIELDS)
    return (await conn.exec_driver_sql(sql, args)).all()


# built once: building a select per call (and its cache key) cost more than running it
_TARGET_BY_NAME = select(targets).where(targets.c.name == bindparam("name"))
# Replicas loading one targets file at once upsert the same names: the primary
# key, not an earlier read, decides who creates a target, and the others replace
# it rather than fail. ``created_at`` is written on insert only.
_TARGET_FIELDS = (*SPEC_FIELDS, "disabled_reason", "updated_at")


def _upsert_target(dialect_insert: Any) -> Any:
    statement = dialect_insert(targets).values(
        {name: bindparam(name) for name in ("name", "created_at", *_TARGET_FIELDS)}
    )
    return statement.on_conflict_do_update(
        index_elements=[targets.c.name],
        set_={name: statement.excluded[name] for name in _TARGET_FIELDS},
    )


# On Postgres the row says which it was: only a row this statement inserted has
# no xmax (an update leaves there the row lock it took), in or out of a batch.
_UPSERT_TARGET_PG = _upsert_target(postgresql.insert).returning(
    *targets.c, literal_column("xmax = 0", Boolean).label("inserted")
)
_UPSERT_TARGET_SQLITE = _upsert_target(sqlite.insert).returning(*targets.c)
_INSERT_ATTEMPTS = insert(attempts)
_JOB = select(jobs).where(jobs.c.id == bindparam("id"), jobs.c.caller == bindparam("caller"))
_JOB_OF_ANYONE = select(jobs).where(jobs.c.id == bindparam("id"))
# Each set of states is counted from its own partial index, never from the
# table: the unfinished ones hold the backlog (bounded by CSJD_MAX_BACKLOG), the
# finished ones everything kept for CSJD_RETENTION_S (see count_by_state).
_COUNT_ACTIVE_BY_STATE = text(f"SELECT state, count(*) FROM jobs WHERE {ACTIVE_SQL} GROUP BY state")
_COUNT_FINISHED_BY_STATE = text(
    f"SELECT state, count(*) FROM jobs WHERE {FINISHED_SQL} GROUP BY state"
)
_NEXT_DUE = text("SELECT min(next_attempt_at) FROM jobs WHERE state IN ('scheduled', 'retrying')")
_COUNT_ACTIVE = text(f"SELECT count(*) FROM jobs WHERE {ACTIVE_SQL}")
_BACKLOG = text(
    f"SELECT target, state, count(*) FROM jobs WHERE {ACTIVE_SQL} GROUP BY target, state"
)
_BUSY = text(f"SELECT count(*) FROM jobs WHERE target = :t AND {ACTIVE_SQL}")
_CANCEL = text(
    "UPDATE jobs SET state = 'cancelled', completed_at = :now, next_attempt_at = NULL, "
    "updated_at = :now "
    f"WHERE id = :id AND caller = :caller AND {ACTIVE_SQL} "
    f"RETURNING {_COLUMNS}"
).columns(*jobs.c)
_RETRY = text(
    "UPDATE jobs SET state = 'queued', attempts = 0, failure_reason = NULL, "
    "completed_at = NULL, next_attempt_at = :now, "
    "expires_at = :now + (expires_at - created_at), lease_expires_at = NULL, "
    "updated_at = :now "
    "WHERE id = :id AND caller = :caller AND state IN ('failed', 'cancelled') "
    f"RETURNING {_COLUMNS}"
).columns(*jobs.c)
# The oldest finished jobs, by ix_jobs_completed. Only finished jobs have a
# completed_at; the state check stays as a guard, written NOT IN so that it is
# not ix_jobs_finished's term, which SQLite would take for the cheaper way in.
_PURGEABLE = (
    "SELECT id FROM jobs WHERE completed_at IS NOT NULL AND completed_at < :before "
    "AND state NOT IN ('scheduled', 'queued', 'running', 'retrying') LIMIT :limit{lock}"
)
_SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
_PURGE_ATTEMPTS = text(f"DELETE FROM attempts WHERE job_id IN ({_PURGEABLE.format(lock='')})")
_PURGE_ATTEMPTS_PG = text(
    f"DELETE FROM attempts WHERE job_id IN ({_PURGEABLE.format(lock=_SKIP_LOCKED)})"
)
_PURGE_JOBS = text(f"DELETE FROM jobs WHERE id IN ({_PURGEABLE.format(lock='')})")
_PURGE_JOBS_PG = text(f"DELETE FROM jobs WHERE id IN ({_PURGEABLE.format(lock=_SKIP_LOCKED)})")
_STALE_RUNNING_SQL = (
    f"SELECT {_COLUMNS} FROM jobs WHERE lease_expires_at IS NOT NULL "
    "AND lease_expires_at < :before AND state IN ('running', 'cancelled'){lock}"
)
_STALE_RUNNING = text(_STALE_RUNNING_SQL.format(lock="")).columns(*jobs.c)
# rows another replica is completing right now are not stale: skipped, never waited for
_STALE_RUNNING_PG = text(_STALE_RUNNING_SQL.format(lock=_SKIP_LOCKED)).columns(*jobs.c)

PURGE_BATCH = 5000
#: how long a read is tried again after transient errors before it answers 503
READ_BUDGET_S = 1.0


def list_query(
    caller: str | None,
    *,
    state: JobState | None,
    target: str | None,
    limit: int,
    before_id: str | None,
) -> Select[Any]:
    """``GET /jobs``: by ``(caller, id)`` or ``(target, id)``, or by the partial index of
    the state asked for, which the statement names by its exact term (``models.py``)."""
    query = select(jobs)
    if caller is not None:
        query = query.where(jobs.c.caller == caller)
    if state is not None:
        query = query.where(jobs.c.state == state.value)
        query = query.where(text(FINISHED_SQL if state in TERMINAL else ACTIVE_SQL))
    if target is not None:
        query = query.where(jobs.c.target == target)
    if before_id is not None:
        query = query.where(jobs.c.id < before_id)
    return query.order_by(jobs.c.id.desc()).limit(limit)


def _first_id(ts: float) -> str:
    """The smallest UUIDv7 (see ``app/core/ids.py``) of the millisecond ``ts`` falls in."""
    h = f"{(int(ts * 1000) & ((1 << 48) - 1)) << 80 | 0x7 << 76:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _bucket(postgres: bool, column: str) -> str:
    """SQL for the bucket a timestamp falls in, counted from ``:since``."""
    if postgres:
        return f"CAST(floor(({column} - :since) / :bucket_s) AS INTEGER)"
    # SQLite's CAST truncates, which is floor for the non-negative values selected
    return f"CAST(({column} - :since) / :bucket_s AS INTEGER)"


def _activity(postgres: bool) -> tuple[TextClause, TextClause]:
    """The dashboard's two counts: jobs accepted (by the primary key: ids are made
    from the creation time) and jobs finished (by ``ix_jobs_completed``), both in a
    window, so a refresh reads the window's rows and never the whole table."""
    accepted = text(
        f"SELECT target, {_bucket(postgres, 'created_at')} AS b, count(*) FROM jobs "
        "WHERE id >= :first_id AND id <= :last_id "
        "AND created_at >= :since AND created_at < :until GROUP BY target, b"
    )
    finished = text(
        f"SELECT target, state, {_bucket(postgres, 'completed_at')} AS b, count(*) FROM jobs "
        "WHERE completed_at IS NOT NULL AND completed_at >= :since "
        "AND completed_at < :until AND state IN ('succeeded', 'failed') "
        "GROUP BY target, state, b"
    )
    return accepted, finished


_ACTIVITY_SQLITE = _activity(postgres=False)
_ACTIVITY_PG = _activity(postgres=True)
#: The largest id there can be: the accepted count's upper bound on ids excludes
#: nothing (an id can run ahead of its creation time, by a borrowed millisecond or
#: a clock stepped back, and ``created_at`` does the exact filtering). It is there
#: because SQLite, without statistics, takes a closed range on the primary key
#: for a few rows, and preferred to read an open one's every row in target order
#: to save the GROUP BY its sort.
_LAST_ID = "ffffffff-ffff-ffff-ffff-ffffffffffff"


def activity_params(since: float, until: float, bucket_s: float) -> dict[str, Any]:
    return {
        "since": since,
        "until": until,
        "bucket_s": bucket_s,
        "first_id": _first_id(since),
        "last_id": _LAST_ID,
    }


def _raise_if_error(result: T | errors.CsjdError) -> T:
    if isinstance(result, errors.CsjdError):
        raise result
    return result


def _no_one_listens(job_ids: Iterable[str] | None) -> None:
    pass


class SqlJobStore:
    def __init__(self, database: Database, *, max_backlog: int, shared: bool = False) -> None:
        #: told, after each commit, which jobs changed state (None: some, unknown which)
        self.on_change: Callable[[Iterable[str] | None], None] = _no_one_listens
        self._database = database
        self._writer = GroupCommitter(database)
        self._max_backlog = max_backlog
        self._active = 0
        self._pg = database.dialect.name == "postgresql"
        self._shared = shared or self._pg

    @property
    def shared(self) -> bool:
        """Whether other processes write to this database too (counts go stale)."""
        return self._shared

    @property
    def database(self) -> Database:
        return self._database

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
        if not self._pg:
            return time.time()

        async def unit(conn: Conn) -> float:
            return float((await conn.execute(_DATABASE_TIME_PG)).scalar_one())

        return await self._read(unit, budget_s=0.0)

    @property
    def active(self) -> int:
        """Non-terminal jobs, as this process counts them."""
        return self._active

    async def recount(self) -> int:
        self._active = await self._writer.run(self._count_active)
        return self._active

    async def _count_active(self, tx: Tx) -> int:
        return int((await tx.conn.execute(_COUNT_ACTIVE)).scalar_one())

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
            if self._pg:
                result = await tx.conn.execute(_UPSERT_TARGET_PG, parameters)
                row = result.mappings().one()
                return target_record(row), bool(row["inserted"])
            # SQLite writes begin with BEGIN IMMEDIATE: no one else writes between
            # this read and the upsert
            before = (await tx.conn.execute(_TARGET_BY_NAME, {"name": spec.name})).first()
            row = (await tx.conn.execute(_UPSERT_TARGET_SQLITE, parameters)).mappings().one()
            return target_record(row), before is None

        return await self._writer.run(op, alone=True)

    async def get_target(self, name: str) -> TargetRecord | None:
        async def unit(conn: Conn) -> TargetRecord | None:
            row = (await conn.execute(_TARGET_BY_NAME, {"name": name})).mappings().first()
            return None if row is None else target_record(row)

        return await self._read(unit)

    async def list_targets(self) -> list[TargetRecord]:
        async def unit(conn: Conn) -> list[TargetRecord]:
            rows = (await conn.execute(select(targets).order_by(targets.c.name))).mappings()
            return [target_record(row) for row in rows]

        return await self._read(unit)

    async def delete_target(self, name: str) -> None:
        """Delete a target no unfinished job names.

        On Postgres the target's row is locked first, so no other replica's
        intake can add a job for it between the count and the delete (intake
        holds a key-share lock on the targets it names until it commits). The
        lock is taken without waiting: a target intake holds right now is in use.
        """

        async def op(tx: Tx) -> errors.CsjdError | None:
            if self._pg:
                held = (await tx.conn.execute(_LOCK_TARGET_FOR_DELETE_PG, {"name": name})).first()
                if held is None and await self._target_in_batch(tx, name) is not None:
                    return errors.Conflict(
                        f"target '{name}' is taking jobs right now; try again",
                        retry_after_s=1,
                    )
            busy = (await tx.conn.execute(_BUSY, {"t": name})).scalar_one()
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
            for target, state, count in await conn.execute(_BACKLOG):
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
        if self._pg:
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
            statement = _INSERT_PG if tx.conn.dialect.name == "postgresql" else _INSERT_SQLITE
            # Replicas insert keys in one order: two batches sharing keys wait on
            # each other's unique-index entries, never in a cycle.
            ordered = sorted(rows, key=lambda r: (r["caller"], r["idempotency_key"]))
            inserted = {row[0] for row in await tx.conn.execute(statement, ordered)}
            self._adjust_active(tx, len(inserted))
            if self._pg and inserted:
                await tx.conn.execute(_NOTIFY_PG)  # once per batch: wakes every replica
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
        """Key-share lock the named targets (Postgres), and cache what they are."""
        cache: dict[str, TargetRecord | None] = tx.batch.setdefault("targets", {})
        rows = (await tx.conn.execute(_LOCK_TARGETS_PG, {"names": sorted(names)})).mappings()
        found = {row["name"]: target_record(row) for row in rows}
        for name in names:
            cache[name] = found.get(name)

    async def _target_in_batch(self, tx: Tx, name: str) -> TargetRecord | None:
        cache: dict[str, TargetRecord | None] = tx.batch.setdefault("targets", {})
        if name not in cache:
            row = (await tx.conn.execute(_TARGET_BY_NAME, {"name": name})).mappings().first()
            cache[name] = None if row is None else target_record(row)
        return cache[name]

    # -- reads ----------------------------------------------------------------

    async def get_job(self, caller: str | None, job_id: str) -> JobRecord | None:
        """The caller's job; ``caller=None`` finds anyone's (the dashboard, an admin tool)."""
        statement = _JOB if caller is not None else _JOB_OF_ANYONE

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
        accepted, finished = _ACTIVITY_PG if self._pg else _ACTIVITY_SQLITE

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
        statements = [
            statement
            for group, statement in (
                (ACTIVE, _COUNT_ACTIVE_BY_STATE),
                (TERMINAL, _COUNT_FINISHED_BY_STATE),
            )
            if group & set(states)
        ]

        async def unit(conn: Conn) -> dict[JobState, int]:
            counts = dict.fromkeys(states, 0)
            for statement in statements:
                for state, count in await conn.execute(statement):
                    if JobState(state) in counts:
                        counts[JobState(state)] = int(count)
            return counts

        return await self._read(unit)

    async def next_due(self) -> float | None:
        async def unit(conn: Conn) -> float | None:
            value = (await conn.execute(_NEXT_DUE)).scalar_one_or_none()
            return None if value is None else float(value)

        return await self._read(unit)

    # -- operator commands ------------------------------------------------------

    async def cancel(self, caller: str, job_id: str, now: float) -> JobRecord:
        async def op(tx: Tx) -> JobRecord | errors.CsjdError:
            row = (
                (await tx.conn.execute(_CANCEL, {"id": job_id, "caller": caller, "now": now}))
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
            if self._pg:
                await self._hold_targets(tx, {current.target})  # against a delete
            if await self._target_in_batch(tx, current.target) is None:
                return errors.Conflict(f"the job's target '{current.target}' no longer exists")
            if self._pending_active(tx) + 1 > self._max_backlog:
                return errors.BacklogFull(
                    f"the backlog holds its maximum of {self._max_backlog} unfinished jobs",
                    retry_after_s=5,
                )
            row = (
                (await tx.conn.execute(_RETRY, {"id": job_id, "caller": caller, "now": now}))
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
        row = (await conn.execute(_JOB, {"id": job_id, "caller": caller})).mappings().first()
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
                earlier = (await tx.conn.execute(_CLAIMED_AT, {"now": now})).mappings().all()
                if earlier:
                    return [job_record(row) for row in earlier], []
            promote = _PROMOTE_PG if self._pg else _PROMOTE
            promoted = [row[0] for row in await tx.conn.execute(promote, {"now": now})]
            claimed: list[JobRecord] = []
            for request in sorted(requests, key=lambda r: r.target):
                limit = request.limit
                if self._pg and limit > 0:
                    room = (
                        await tx.conn.execute(
                            _TARGET_ROOM_PG,
                            {"target": request.target, "lock_class": CLAIM_LOCK_CLASS},
                        )
                    ).scalar_one_or_none()
                    limit = min(limit, int(room or 0))
                if limit <= 0:
                    continue
                rows = (
                    await tx.conn.execute(
                        _CLAIM_PG if self._pg else _CLAIM,
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
            matched.update(row[0] for row in await _complete_running(tx.conn, chunk))
        written: list[bool] = []
        finished = 0
        for c, p in zip(batch, params, strict=True):
            if c.job_id in matched:
                written.append(True)
                finished += c.decision.state not in ACTIVE
            else:
                # rare: cancelled while the attempt ran (recorded, stays cancelled), or stale
                written.append(bool((await tx.conn.execute(_COMPLETE_CANCELLED, p)).rowcount))
        self._adjust_active(tx, -finished)
        rows = [attempt_row(c) for c, ok in zip(batch, written, strict=True) if ok and c.attempt]
        if rows:
            await tx.conn.execute(_INSERT_ATTEMPTS, rows)
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
                until_at = placeholder(tx.conn, 2 * len(chunk) + 1, "float8")
                sql = (
                    "WITH v(id, delivery) AS (VALUES "
                    + values_rows(tx.conn, len(chunk), ("varchar", "int"))
                    + f") UPDATE jobs SET lease_expires_at = {until_at} FROM v "
                    "WHERE jobs.id = v.id AND jobs.deliveries = v.delivery "
                    "AND jobs.lease_expires_at IS NOT NULL RETURNING jobs.id"
                )
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
                    _LEAD, {"name": duty, "holder": holder, "until": now + ttl_s, "now": now}
                )
            ).first()
            return row is not None

        return await self._writer.run(op, alone=True)

    async def fail_expired(self, now: float) -> int:
        async def op(tx: Tx) -> int:
            statement = _FAIL_EXPIRED_PG if self._pg else _FAIL_EXPIRED
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
            stale = _STALE_RUNNING_PG if self._pg else _STALE_RUNNING
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
            await tx.conn.execute(_PURGE_ATTEMPTS_PG if self._pg else _PURGE_ATTEMPTS, params)
            purge_jobs = _PURGE_JOBS_PG if self._pg else _PURGE_JOBS
            return int((await tx.conn.execute(purge_jobs, params)).rowcount)

        total = 0
        while (count := await self._writer.run(op, alone=True)) > 0:
            total += count
            if count < PURGE_BATCH:
                break
        return total


async def _write_target_effects(target: str, change: Effects, now: float, conn: Conn) -> None:
    if change.pause_until is not None:
        await conn.execute(_PAUSE_TARGET, {"until": change.pause_until, "name": target})
    if change.disabled_reason is not None:
        await conn.execute(
            update(targets)
            .where(targets.c.name == target)
            .values(enabled=False, disabled_reason=change.disabled_reason, updated_at=now)
        )


_PAUSE_TARGET = text(
    "UPDATE targets SET paused_until = :until WHERE name = :name "
    "AND (paused_until IS NULL OR paused_until < :until)"
)


def _key_reused(job: NewJob, row: RowMapping) -> errors.CsjdError:
    return errors.IdempotencyKeyReused(
        f"Idempotency-Key '{job.idempotency_key}' was used for a different request "
        f"(job {row['id']})",
        extensions={"job_id": row["id"]},
    )
