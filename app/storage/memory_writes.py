"""What each write of ``MemoryJobStore`` makes of the one record it touches.

Pure functions from a frozen record (and the write's arguments) to the next
record, each the counterpart of one of ``SqlJobStore``'s statements: the
columns it sets, the guard it checks. Which records a write touches, in what
order, and what it refuses, is the store's business (``memory.py``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.core.answer import EXCERPT_BYTES, storable
from app.core.attempt import AttemptRecord, Completion
from app.core.job import ACTIVE, FailureReason, JobRecord, JobState
from app.core.target import TargetRecord, TargetSpec, disabled_reason


def put(spec: TargetSpec, before: TargetRecord | None, now: float) -> TargetRecord:
    """A target as configured, over what ``before`` was (if it existed)."""
    return TargetRecord(
        spec=replace(spec, headers=dict(spec.headers)),
        disabled_reason=disabled_reason(spec),
        # a pause is the target's own doing (it throttled us), not configuration
        paused_until=before.paused_until if before else None,
        created_at=before.created_at if before else now,
        updated_at=now,
    )


def claimed(job: JobRecord, now: float, lease_expires_at: float) -> JobRecord:
    return replace(
        job,
        state=JobState.RUNNING,
        delivery=job.delivery + 1,  # the lease's token
        claimed_at=now,
        lease_expires_at=lease_expires_at,
        updated_at=now,
    )


def finished(job: JobRecord, state: JobState, now: float, **changes: Any) -> JobRecord:
    """Cancelled or expired; a running job keeps its lease (its attempt may still
    be recorded)."""
    return replace(
        job, state=state, completed_at=now, next_attempt_at=None, updated_at=now, **changes
    )


def expired(job: JobRecord, now: float) -> JobRecord:
    return finished(job, JobState.FAILED, now, failure_reason=FailureReason.EXPIRED)


def retried(job: JobRecord, now: float) -> JobRecord:
    """Back to ``queued`` with its whole life again, counted from ``now``."""
    return replace(
        job,
        state=JobState.QUEUED,
        attempts=0,
        failure_reason=None,
        completed_at=None,
        next_attempt_at=now,
        expires_at=now + (job.expires_at - job.created_at),
        lease_expires_at=None,
        updated_at=now,
    )


def completed(job: JobRecord, c: Completion) -> JobRecord | None:
    """The job with the attempt's result written, or None if the lease no longer
    holds (another token, no longer running, or for a rescue renewed meanwhile)."""
    lease = job.lease_expires_at
    if job.delivery != c.delivery or (
        c.lapsed_before is not None and (lease is None or lease >= c.lapsed_before)
    ):
        return None
    a, d = c.attempt, c.decision
    last: dict[str, Any] = {}
    if a is not None:
        last = {"last_status_code": a.status_code, "last_error": storable(a.error, 1024)}
    if job.state is JobState.RUNNING:
        return replace(
            job,
            state=d.state,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            completed_at=None if d.state in ACTIVE else c.now,
            failure_reason=d.failure_reason,
            lease_expires_at=None,
            updated_at=c.now,
            # a request not sent gives its number back
            delivery=job.delivery - (0 if c.sent else 1),
            **last,
        )
    if job.state is JobState.CANCELLED and lease is not None:
        # cancelled while the attempt ran: recorded, and the job stays cancelled
        return replace(job, attempts=d.attempts, lease_expires_at=None, updated_at=c.now, **last)
    return None


def stored(attempt: AttemptRecord) -> AttemptRecord:
    """The attempt as the database keeps it: text cut to its column, without NUL."""
    return replace(
        attempt,
        error=storable(attempt.error, 1024),
        response_excerpt=storable(attempt.response_excerpt, EXCERPT_BYTES),
        content_type=storable(attempt.content_type, 255),
    )
