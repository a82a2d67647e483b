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
from app.core.job import ACTIVE, FailureReason, JobState
from app.core.outcome import Classified, Outcome
from app.core.retry import Policy, Random, decide
from app.storage.base import AttemptRecord, Completion, JobRecord, NewJob, TargetRecord, TargetSpec

#: the backoff of a rescued job whose target is gone: a target's defaults
_NO_TARGET = TargetSpec(name="", url="")
RESCUED = "csjd stopped during the attempt; its lease was lost"


def put(spec: TargetSpec, before: TargetRecord | None, now: float) -> TargetRecord:
    """A target as configured, over what ``before`` was (if it existed)."""
    return TargetRecord(
        spec=replace(spec, headers=dict(spec.headers)),
        disabled_reason=None if spec.enabled else "disabled by an operator",
        # a pause is the target's own doing (it throttled us), not configuration
        paused_until=before.paused_until if before else None,
        created_at=before.created_at if before else now,
        updated_at=now,
    )


def new(job: NewJob, target: TargetRecord) -> JobRecord:
    """A new job, with what it leaves open taken from its target."""
    return JobRecord(
        id=job.id,
        caller=job.caller,
        idempotency_key=job.idempotency_key,
        target=job.target,
        state=JobState.SCHEDULED if job.next_attempt_at > job.created_at else JobState.QUEUED,
        attempts=0,
        deliveries=0,
        max_attempts=job.max_attempts or target.spec.max_attempts,
        created_at=job.created_at,
        updated_at=job.created_at,
        next_attempt_at=job.next_attempt_at,
        expires_at=job.expires_at or job.created_at + target.spec.max_retry_duration_s,
        completed_at=None,
        claimed_at=None,
        lease_expires_at=None,
        last_status_code=None,
        last_error=None,
        failure_reason=None,
        payload=bytes(job.payload),
        headers=dict(job.headers) if job.headers else None,
    )


def claimed(job: JobRecord, now: float, lease_expires_at: float) -> JobRecord:
    return replace(
        job,
        state=JobState.RUNNING,
        deliveries=job.deliveries + 1,  # the lease's token
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
    if job.deliveries != c.lease or (
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
            deliveries=job.deliveries - (0 if c.sent else 1),
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


def with_effects(target: TargetRecord, c: Completion) -> TargetRecord:
    """The target after an attempt's result: paused (never for less time than it
    already is), or disabled because it answered 410 Gone."""
    d = c.decision
    if d.pause_target_until is not None and (
        target.paused_until is None or target.paused_until < d.pause_target_until
    ):
        target = replace(target, paused_until=d.pause_target_until)
    if d.disable_target:
        status = c.attempt.status_code if c.attempt else None
        target = replace(
            target,
            spec=replace(target.spec, enabled=False),
            disabled_reason=f"the target answered {status} Gone",
            updated_at=c.now,
        )
    return target


def rescue(
    job: JobRecord,
    target: TargetRecord | None,
    now: float,
    rng: Random,
    lapsed_before: float | None,
) -> Completion:
    """The result of an attempt whose worker is gone: interrupted, and counted."""
    spec = target.spec if target else _NO_TARGET
    policy = Policy(
        max_attempts=job.max_attempts,
        backoff_initial_s=spec.backoff_initial_s,
        backoff_max_s=spec.backoff_max_s,
        expires_at=job.expires_at,
    )
    result = Classified(outcome=Outcome.INTERRUPTED, counted=True, error=RESCUED)
    started = job.claimed_at or now
    return Completion(
        job_id=job.id,
        target=job.target,
        lease=job.deliveries,
        decision=decide(policy, job.attempts, result, now, rng),
        attempt=AttemptRecord(
            n=job.deliveries,
            started_at=started,
            finished_at=now,
            duration_ms=max(0.0, (now - started) * 1000),
            status_code=None,
            outcome=Outcome.INTERRUPTED,
            error=RESCUED,
            response_excerpt=None,
        ),
        now=now,
        lapsed_before=lapsed_before,
    )
