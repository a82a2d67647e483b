"""The store's SQL, written once for SQLite and Postgres.

Statements that read the same on both backends are module constants;
those with a part only the dialect knows (a lock clause, the rows replicas
may write at once, a floor, the INSERT that says ON CONFLICT) are built by
``Statements`` from a ``Dialect`` (``dialect.py``), once per store: building
a statement per call, and its cache key, cost more than running it. The
statements that exist on one backend only live in its module
(``postgres.py``). Hot-path statements are plain SQL with literal state
names so that the partial indexes of ``models.py`` match them.

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

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Executable,
    Select,
    TextClause,
    TextualSelect,
    bindparam,
    false,
    func,
    select,
    text,
    update,
)

from app.core.job import RETRIABLE, TERMINAL, JobState
from app.core.target import SPEC_FIELDS
from app.storage import counts
from app.storage.base import JobFilter
from app.storage.dialect import Dialect, Insert
from app.storage.models import (
    ACTIVE_SQL,
    FINISHED_SQL,
    jobs,
    target_backlog,
    target_minutes,
    targets,
)
from app.storage.ordering import LineStatements

COLUMNS = ", ".join(c.name for c in jobs.c)

#: due jobs one claim round promotes on Postgres (the rest in the next rounds), so
#: a mass of jobs coming due together does not hold the claim's transaction long
PROMOTE_BATCH = 10_000
#: watched jobs whose versions one statement reads
VERSIONS_CHUNK = 500
#: finished jobs one purge transaction deletes
PURGE_BATCH = 5000

# -- written for the dialect (see Statements) -------------------------------

# Which state each promoted job left is in the row still: a job waiting that was
# never claimed is scheduled (only new jobs are), and one that was is retrying
# (only a running job's result makes one); the counts need it (counts.py).
# ``claimed_at > 0``, not ``IS NOT NULL``: SQLite 3.40's RETURNING takes a column
# of this table for never NULL in ``IS [NOT] NULL`` (true and false, whatever it holds).
_PROMOTE_SQL = (
    "UPDATE jobs SET state = 'queued', updated_at = :now WHERE {where} "
    "RETURNING id, target, CASE WHEN claimed_at > 0 THEN 'retrying' ELSE 'scheduled' END"
)
_DUE = "state IN ('scheduled', 'retrying') AND next_attempt_at <= :now"
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
    f"RETURNING {COLUMNS}"
)
_FAIL_EXPIRED_SET = (
    "state = 'failed', failure_reason = 'expired', completed_at = :now, "
    "next_attempt_at = NULL, updated_at = :now"
)
_EXPIRED = "state IN ('scheduled', 'queued', 'retrying') AND expires_at <= :now"
_STALE_RUNNING_SQL = (
    f"SELECT {COLUMNS} FROM jobs WHERE lease_expires_at IS NOT NULL "
    "AND lease_expires_at < :before AND state IN ('running', 'cancelled'){lock}"
)
# The oldest finished jobs, by ix_jobs_completed. Only finished jobs have a
# completed_at; the state check stays as a guard, written NOT IN so that it is
# not ix_jobs_finished's term, which SQLite would take for the cheaper way in.
_PURGEABLE = (
    "SELECT id FROM jobs WHERE completed_at IS NOT NULL AND completed_at < :before "
    "AND state NOT IN ('scheduled', 'queued', 'running', 'retrying') LIMIT :limit{lock}"
)


@dataclass(frozen=True, slots=True)
class Statements:
    """The statements whose text depends on the dialect, built for one."""

    promote: TextClause
    claim: TextualSelect
    #: run in order; the rows they answer are (target, state left, jobs)
    fail_expired: tuple[TextClause, ...]
    stale_running: TextualSelect
    purge_attempts: TextClause
    purge_jobs: TextClause
    add_backlog: Executable
    add_minutes: Executable
    #: a job's target and state, locked until the transaction ends: (the caller's, anyone's)
    lock_job: tuple[TextualSelect, TextualSelect]
    #: the lines of jobs with an ordering key (``ordering.py``)
    lines: LineStatements

    @classmethod
    def build(cls, dialect: Dialect) -> Statements:
        lock = dialect.skip_locked
        purgeable = _PURGEABLE.format(lock=lock)
        return cls(
            # Replicas promote at once: each takes the rows no other is promoting,
            # never waits.
            promote=text(
                _PROMOTE_SQL.format(where=dialect.unlocked_rows(_DUE, limit=PROMOTE_BATCH))
            ),
            # Replicas skip rows another replica is claiming instead of waiting for them.
            claim=text(_CLAIM_SQL.format(lock=lock)).columns(*jobs.c),
            # the states the jobs left: the counts need them
            fail_expired=tuple(
                text(sql) for sql in dialect.counted_update(_FAIL_EXPIRED_SET, _EXPIRED)
            ),
            # rows another replica is completing right now are not stale: skipped,
            # never waited for
            stale_running=text(_STALE_RUNNING_SQL.format(lock=lock)).columns(*jobs.c),
            purge_attempts=text(f"DELETE FROM attempts WHERE job_id IN ({purgeable})"),
            purge_jobs=text(f"DELETE FROM jobs WHERE id IN ({purgeable})"),
            # The counts a transaction changed, added in one statement per table at
            # its end (store.py), in key order: writers lock these rows in one order.
            add_backlog=_add(dialect.insert(target_backlog), ["target", "state"], ["count"]),
            add_minutes=_add(
                dialect.insert(target_minutes), ["target", "minute"], list(counts.KINDS)
            ),
            lock_job=_mine_and_anyones(
                f"SELECT target, state FROM jobs WHERE id = :id{{caller}}{dialect.lock_row}",
                jobs.c.target,
                jobs.c.state,
            ),
            lines=LineStatements.build(dialect),
        )


def _add(insert: Insert, key: list[str], counts: list[str]) -> Executable:
    """An upsert that adds its row's ``counts`` to those of the row with its ``key``."""
    table = insert.table
    return insert.on_conflict_do_update(
        index_elements=key,
        set_={name: table.c[name] + insert.excluded[name] for name in counts},
    )


def first_id(ts: float) -> str:
    """The smallest UUIDv7 (see ``app/core/ids.py``) of the millisecond ``ts`` falls in."""
    h = f"{(int(ts * 1000) & ((1 << 48) - 1)) << 80 | 0x7 << 76:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# -- the same on every dialect ------------------------------------------------

CLAIMED_AT = text(
    f"SELECT {COLUMNS} FROM jobs WHERE lease_expires_at IS NOT NULL AND claimed_at = :now "
    "AND state = 'running'"
).columns(*jobs.c)
# One row per duty: the holder renews it; anyone may take it once it lapsed.
LEAD = text(
    "INSERT INTO leaders (name, holder, expires_at) VALUES (:name, :holder, :until) "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
    "expires_at = excluded.expires_at "
    "WHERE leaders.holder = excluded.holder OR leaders.expires_at < :now "
    "RETURNING holder"
)
# A holder stepping down (a clean stop): the next to ask takes the duty at once.
RESIGN = text("DELETE FROM leaders WHERE name = :name AND holder = :holder")
# A job cancelled while its attempt ran: record the attempt, keep it cancelled.
COMPLETE_CANCELLED = text(
    "UPDATE jobs SET attempts = :attempts, "
    "last_status_code = CASE WHEN :recorded = 1 THEN :status_code ELSE last_status_code END, "
    "last_error = CASE WHEN :recorded = 1 THEN :error ELSE last_error END, "
    "lease_expires_at = NULL, updated_at = :now "
    "WHERE id = :id AND deliveries = :delivery AND state = 'cancelled' "
    "AND lease_expires_at IS NOT NULL AND (CAST(:lapsed_before AS DOUBLE PRECISION) IS NULL "
    "OR lease_expires_at < CAST(:lapsed_before AS DOUBLE PRECISION))"
)
# built once: building a select per call (and its cache key) cost more than running it
TARGET_BY_NAME = select(targets).where(targets.c.name == bindparam("name"))
# Replicas loading one targets file at once upsert the same names: the primary
# key, not an earlier read, decides who creates a target, and the others replace
# it rather than fail. ``created_at`` is written on insert only.
_TARGET_FIELDS = (*SPEC_FIELDS, "disabled_reason", "updated_at")


def upsert_target(statement: Insert) -> Any:
    """The targets upsert, from the dialect's INSERT into ``targets``."""
    statement = statement.values(
        {name: bindparam(name) for name in ("name", "created_at", *_TARGET_FIELDS)}
    )
    return statement.on_conflict_do_update(
        index_elements=[targets.c.name],
        set_={name: statement.excluded[name] for name in _TARGET_FIELDS},
    )


# ``replace_target``: the row is written only if no one wrote it since it was read
# (an UPDATE's parameters may not bear its columns' names: each is ``new_<column>``)
REPLACE_TARGET = (
    update(targets)
    .where(targets.c.name == bindparam("target"), targets.c.updated_at == bindparam("seen"))
    .values({name: bindparam(f"new_{name}") for name in _TARGET_FIELDS})
    .returning(*targets.c)
)

JOB = select(jobs).where(jobs.c.id == bindparam("id"), jobs.c.caller == bindparam("caller"))
JOB_OF_ANYONE = select(jobs).where(jobs.c.id == bindparam("id"))
# The unfinished jobs by state, and all of them, from the backlog the writes keep
# per target (counts.py): a row per target and state, however deep the backlog.
COUNT_ACTIVE_BY_STATE = text("SELECT state, sum(count) FROM target_backlog GROUP BY state")
COUNT_ACTIVE = text("SELECT coalesce(sum(count), 0) FROM target_backlog")
# The finished jobs by state from their partial index, never from the table: every
# job kept for CSJD_RETENTION_S (see count_by_state).
COUNT_FINISHED_BY_STATE = text(
    f"SELECT state, count(*) FROM jobs WHERE {FINISHED_SQL} GROUP BY state"
)
# the jobs with a line or a callback that a maintenance pass at ``now`` just
# failed as expired (endings.Ended's fields)
EXPIRED_NOW_FOLLOWED = text(
    "SELECT target, ordering_key, id, callback_target FROM jobs WHERE completed_at = :now "
    "AND failure_reason = 'expired' "
    "AND (ordering_key IS NOT NULL OR callback_target IS NOT NULL)"
)
NEXT_DUE = text("SELECT min(next_attempt_at) FROM jobs WHERE state IN ('scheduled', 'retrying')")
# the backlog counted from the jobs (maintenance checks the kept counts against it)
BACKLOG = text(
    f"SELECT target, state, count(*) FROM jobs WHERE {ACTIVE_SQL} GROUP BY target, state"
)
# the backlog as kept by the writes (counts.py): a row per target and state
BACKLOG_KEPT = text("SELECT target, state, count FROM target_backlog WHERE count <> 0")
MINUTES = text(
    "SELECT target, minute, accepted, succeeded, failed FROM target_minutes "
    "WHERE minute >= :since AND minute < :until"
)
FORGET_MINUTES = text("DELETE FROM target_minutes WHERE minute < :before")
FORGET_TARGET = (
    text("DELETE FROM target_backlog WHERE target = :t"),
    text("DELETE FROM target_minutes WHERE target = :t"),
)
BUSY = text(f"SELECT count(*) FROM jobs WHERE target = :t AND {ACTIVE_SQL}")
# the unfinished jobs that would call the target back when they end (its index
# holds only jobs with a callback; the states are a filter, written apart from
# ix_jobs_active's term so that SQLite does not take that index instead)
CALLED_BACK_BY = text(
    "SELECT count(*) FROM jobs WHERE callback_target = :t "
    "AND state NOT IN ('succeeded', 'failed', 'cancelled')"
)
# the job's state as read (and locked, where writers lock rows) just before
_CANCEL_SQL = (
    "UPDATE jobs SET state = 'cancelled', completed_at = :now, next_attempt_at = NULL, "
    "updated_at = :now "
    f"WHERE id = :id{{caller}} AND state = :was "
    f"RETURNING {COLUMNS}"
)
_RETRIABLE_SQL = ", ".join(sorted(f"'{state.value}'" for state in RETRIABLE))
# any finished job (its id names it; no index of states is wanted)
_RETRY_SQL = (
    "UPDATE jobs SET state = 'queued', attempts = 0, failure_reason = NULL, "
    "completed_at = NULL, next_attempt_at = :now, not_before = NULL, "
    "expires_at = :now + (expires_at - created_at), lease_expires_at = NULL, "
    "updated_at = :now "
    f"WHERE id = :id{{caller}} AND state IN ({_RETRIABLE_SQL}) "
    f"RETURNING {COLUMNS}"
)


def _mine_and_anyones(sql: str, *columns: Any) -> tuple[TextualSelect, TextualSelect]:
    """A statement on one job: (the caller's job, anyone's: an admin's), answering
    ``columns`` (every column of ``jobs`` unless named)."""
    columns = columns or tuple(jobs.c)
    return (
        text(sql.format(caller=" AND caller = :caller")).columns(*columns),
        text(sql.format(caller="")).columns(*columns),
    )


CANCEL = _mine_and_anyones(_CANCEL_SQL)
RETRY = _mine_and_anyones(_RETRY_SQL)
PAUSE_TARGET = text(
    "UPDATE targets SET paused_until = :until WHERE name = :name "
    "AND (paused_until IS NULL OR paused_until < :until)"
)


def _filtered(query: Select[Any], f: JobFilter) -> Select[Any]:
    """``query`` narrowed to the jobs ``f`` takes, each term written for an index: the
    caller by ``(caller, id)``, the target by ``(target, id)``, a state (or a failure
    reason: only failed jobs carry one) by the partial index of its set of states,
    which the statement names by its exact term (``models.py``), and a creation time
    from (below) and a range of ids by the primary key."""
    state = f.state
    if f.reason is not None:
        if state not in (None, JobState.FAILED):
            return query.where(false())
        state = JobState.FAILED
        query = query.where(jobs.c.failure_reason == f.reason.value)
    if f.caller is not None:
        query = query.where(jobs.c.caller == f.caller)
    if state is not None:
        query = query.where(jobs.c.state == state.value)
        query = query.where(text(FINISHED_SQL if state in TERMINAL else ACTIVE_SQL))
    if f.target is not None:
        query = query.where(jobs.c.target == f.target)
    if f.ordering_key is not None:
        query = query.where(jobs.c.ordering_key == f.ordering_key)
    if f.created_after is not None:
        if f.created_after > 0:
            # An id is made from its job's creation time or a later one (never an
            # earlier), so it bounds the ids from below: a range of the primary
            # key. No bound holds from above (an id may run ahead of its time).
            query = query.where(jobs.c.id >= first_id(f.created_after))
        query = query.where(jobs.c.created_at >= f.created_after)
    if f.created_before is not None:
        query = query.where(jobs.c.created_at < f.created_before)
    if f.above_id is not None:
        query = query.where(jobs.c.id > f.above_id)
    if f.upto_id is not None:
        query = query.where(jobs.c.id <= f.upto_id)
    return query


def list_query(f: JobFilter, *, limit: int, before_id: str | None) -> Select[Any]:
    """``GET /jobs``: the jobs ``f`` takes, newest first (by id), below ``before_id``."""
    query = _filtered(select(jobs), f)
    if before_id is not None:
        query = query.where(jobs.c.id < before_id)
    return query.order_by(jobs.c.id.desc()).limit(limit)


def count_query(f: JobFilter) -> Select[Any]:
    """``GET /jobs/count``: how many jobs ``f`` takes, read as ``list_query`` reads them."""
    return _filtered(select(func.count()).select_from(jobs), f)
