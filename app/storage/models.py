"""The schema, defined once with SQLModel; alembic migrations follow it.

Timestamps are stored as epoch seconds (floating point) on every backend so
that SQLite and Postgres compare and index them the same way. Job payloads are
stored as the exact compact JSON bytes that will be delivered.

Every hot statement has an index of its own, and on SQLite it must be the one
the planner picks without statistics (csjd never runs ``ANALYZE`` there; see
``app/storage/statements.py``). Hence no index leads with ``state`` for all rows:
SQLite assumes an equality on an indexed column matches about ten rows, so
such an index beat the partial indexes for every statement that names a set
of states, and scanned the whole backlog instead. State-led indexes are
partial instead, one per set of states (``ACTIVE_SQL``, ``FINISHED_SQL``):
SQLite uses a partial index only for a statement that repeats its ``WHERE``
term exactly, so each serves the statements written for it and misleads no
other. ``tests/storage/test_plans.py`` holds every hot statement to its index.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

_WAITING = "state IN ('scheduled', 'retrying')"
_UNFINISHED = "state IN ('scheduled', 'queued', 'retrying')"
#: The ``WHERE`` terms of the partial indexes by set of states. A statement
#: meant for one of them repeats the term as it is written here: SQLite
#: matches a partial index by the form of the term, not by what it implies.
ACTIVE_SQL = "state IN ('scheduled', 'queued', 'running', 'retrying')"
FINISHED_SQL = "state IN ('succeeded', 'failed', 'cancelled')"
_QUEUED_FIRST = "state = 'queued' AND deliveries = 0"
_QUEUED_RETRY = "state = 'queued' AND deliveries > 0"
#: jobs waiting behind the head of their ordering key's line (``app/core/ordering.py``)
BEHIND_SQL = "state = 'scheduled' AND next_attempt_at IS NULL"


class TargetRow(SQLModel, table=True):
    __tablename__ = "targets"

    name: str = Field(sa_column=Column(String(63), primary_key=True))
    url: str = Field(sa_column=Column(String(2048), nullable=False))
    timeout_s: float
    max_concurrency: int
    rate_limit_per_s: float | None = None
    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    max_retry_duration_s: float
    secret: str | None = Field(default=None, sa_column=Column(String(512), nullable=True))
    headers: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, sa_column=Column(String(512)))
    paused_until: float | None = None
    created_at: float
    updated_at: float


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("caller", "idempotency_key", name="uq_jobs_caller_key"),
        # claims read first attempts and retries apart (a retry bound skips none)
        Index(
            "ix_jobs_claim_first",
            "target",
            "next_attempt_at",
            sqlite_where=text(_QUEUED_FIRST),
            postgresql_where=text(_QUEUED_FIRST),
        ),
        Index(
            "ix_jobs_claim_retry",
            "target",
            "next_attempt_at",
            sqlite_where=text(_QUEUED_RETRY),
            postgresql_where=text(_QUEUED_RETRY),
        ),
        Index(
            "ix_jobs_waiting",
            "next_attempt_at",
            sqlite_where=text(_WAITING),
            postgresql_where=text(_WAITING),
        ),
        Index(
            "ix_jobs_expiry",
            "expires_at",
            sqlite_where=text(_UNFINISHED),
            postgresql_where=text(_UNFINISHED),
        ),
        Index(
            "ix_jobs_running",
            "lease_expires_at",
            sqlite_where=text("lease_expires_at IS NOT NULL"),
            postgresql_where=text("lease_expires_at IS NOT NULL"),
        ),
        Index(
            "ix_jobs_completed",
            "completed_at",
            sqlite_where=text("completed_at IS NOT NULL"),
            postgresql_where=text("completed_at IS NOT NULL"),
        ),
        # counts by state (the gauge, the backlog per target) without the table
        Index(
            "ix_jobs_active",
            "state",
            "target",
            sqlite_where=text(ACTIVE_SQL),
            postgresql_where=text(ACTIVE_SQL),
        ),
        # finished jobs by state, newest first (the dashboard's failed jobs), and counted
        Index(
            "ix_jobs_finished",
            "state",
            "id",
            sqlite_where=text(FINISHED_SQL),
            postgresql_where=text(FINISHED_SQL),
        ),
        # GET /jobs: a caller's jobs, or a target's, newest first
        Index("ix_jobs_caller_id", "caller", "id"),
        Index("ix_jobs_target_id", "target", "id"),
        # the next of a line, in the order accepted: holds only jobs waiting in lines
        Index(
            "ix_jobs_line",
            "target",
            "ordering_key",
            "ordering_seq",
            sqlite_where=text(BEHIND_SQL),
            postgresql_where=text(BEHIND_SQL),
        ),
        # a target's delete: is it told of jobs not finished? Holds only jobs with a callback
        Index(
            "ix_jobs_callback",
            "callback_target",
            sqlite_where=text("callback_target IS NOT NULL"),
            postgresql_where=text("callback_target IS NOT NULL"),
        ),
        # GET /jobs?ordering_key=: holds only jobs with a key
        Index(
            "ix_jobs_ordering_key",
            "ordering_key",
            "id",
            sqlite_where=text("ordering_key IS NOT NULL"),
            postgresql_where=text("ordering_key IS NOT NULL"),
        ),
    )

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    caller: str = Field(sa_column=Column(String(128), nullable=False))
    idempotency_key: str = Field(sa_column=Column(String(255), nullable=False))
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False))
    target: str = Field(sa_column=Column(String(63), nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    headers: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    attempts: int = 0
    #: requests sent so far; also the lease token a completion must present.
    deliveries: int = 0
    max_attempts: int
    created_at: float
    updated_at: float
    next_attempt_at: float | None = None
    expires_at: float
    completed_at: float | None = None
    claimed_at: float | None = None
    lease_expires_at: float | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(String(1024)))
    failure_reason: str | None = Field(default=None, sa_column=Column(String(32)))
    ordering_key: str | None = Field(default=None, sa_column=Column(String(200)))
    #: the job's place in its line (``ordering_heads.last_seq`` when it joined)
    ordering_seq: int | None = Field(default=None, sa_column=Column(BigInteger))
    #: a job behind its line's head: the time it goes at the earliest once it leads
    not_before: float | None = None
    #: the target told when this job ends, and the callback job its latest ending made
    callback_target: str | None = Field(default=None, sa_column=Column(String(63)))
    callback_job_id: str | None = Field(default=None, sa_column=Column(String(36)))
    #: its endings that called back so far (the next callback's ``n`` is one more)
    callbacks: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class AttemptRow(SQLModel, table=True):
    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_job", "job_id", "n"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(
        sa_column=Column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    )
    n: int
    started_at: float
    finished_at: float
    duration_ms: float
    status_code: int | None = None
    outcome: str = Field(sa_column=Column(String(16), nullable=False))
    error: str | None = Field(default=None, sa_column=Column(String(1024)))
    response_excerpt: str | None = Field(default=None, sa_column=Column(String(2048)))
    #: the answer's media type and its length in bytes, whatever its bytes were
    content_type: str | None = Field(default=None, sa_column=Column(String(255)))
    response_bytes: int | None = Field(default=None, sa_column=Column(BigInteger))


metadata = SQLModel.metadata
jobs = JobRow.__table__  # type: ignore[attr-defined]
targets = TargetRow.__table__  # type: ignore[attr-defined]
attempts = AttemptRow.__table__  # type: ignore[attr-defined]


class LeaderRow(SQLModel, table=True):
    """Who runs a cluster-wide duty (maintenance) until ``expires_at``."""

    __tablename__ = "leaders"

    name: str = Field(sa_column=Column(String(32), primary_key=True))
    holder: str = Field(sa_column=Column(String(128), nullable=False))
    expires_at: float


leaders = LeaderRow.__table__  # type: ignore[attr-defined]


class TargetBacklogRow(SQLModel, table=True):
    """How many of a target's jobs are in one unfinished state, kept by the writes
    that move them (``app/storage/counts.py``): the backlog read without the jobs."""

    __tablename__ = "target_backlog"

    target: str = Field(sa_column=Column(String(63), primary_key=True))
    state: str = Field(sa_column=Column(String(16), primary_key=True))
    count: int = Field(sa_column=Column(BigInteger, nullable=False))


class TargetMinuteRow(SQLModel, table=True):
    """What happened to a target's jobs in one minute: accepted, and finished
    succeeded or failed. ``minute`` is the minute's start, in epoch seconds."""

    __tablename__ = "target_minutes"

    target: str = Field(sa_column=Column(String(63), primary_key=True))
    minute: int = Field(sa_column=Column(BigInteger, primary_key=True))
    accepted: int = Field(sa_column=Column(BigInteger, nullable=False))
    succeeded: int = Field(sa_column=Column(BigInteger, nullable=False))
    failed: int = Field(sa_column=Column(BigInteger, nullable=False))


class OrderingHeadRow(SQLModel, table=True):
    """A line of jobs with one target and ordering key: which job leads it, and the
    place the next job to join takes. The row exists while the line has jobs not
    finished; writers lock it to change the line (``app/storage/ordering.py``)."""

    __tablename__ = "ordering_heads"

    target: str = Field(sa_column=Column(String(63), primary_key=True))
    ordering_key: str = Field(sa_column=Column(String(200), primary_key=True))
    head_id: str = Field(sa_column=Column(String(36), nullable=False))
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))


target_backlog = TargetBacklogRow.__table__  # type: ignore[attr-defined]
ordering_heads = OrderingHeadRow.__table__  # type: ignore[attr-defined]
target_minutes = TargetMinuteRow.__table__  # type: ignore[attr-defined]


class ScheduleRow(SQLModel, table=True):
    """A cron schedule that makes a job for ``target`` at each fire time
    (``app/core/schedule.py``). ``next_run_at`` is NULL while it is disabled."""

    __tablename__ = "schedules"
    # the firing step's read: the schedules due by now, soonest first
    __table_args__ = (
        Index(
            "ix_schedules_due",
            "next_run_at",
            sqlite_where=text("next_run_at IS NOT NULL"),
            postgresql_where=text("next_run_at IS NOT NULL"),
        ),
    )

    name: str = Field(sa_column=Column(String(63), primary_key=True))
    cron: str = Field(sa_column=Column(String(255), nullable=False))
    timezone: str = Field(sa_column=Column(String(64), nullable=False))
    target: str = Field(sa_column=Column(String(63), nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    headers: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    enabled: bool = True
    next_run_at: float | None = None
    last_run_at: float | None = None
    last_job_id: str | None = Field(default=None, sa_column=Column(String(36)))
    last_error: str | None = Field(default=None, sa_column=Column(String(1024)))
    created_at: float
    updated_at: float


schedules = ScheduleRow.__table__  # type: ignore[attr-defined]


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


#: JSON columns through orjson: the standard library's encoder was a visible
#: share of intake's CPU.
ENGINE_JSON: dict[str, Any] = {"json_serializer": json_text, "json_deserializer": orjson.loads}
