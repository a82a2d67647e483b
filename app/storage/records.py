"""Rows to records and back: how the core's records sit in the tables of ``models.py``.

Mappers only, with no SQL and no connection: a row read becomes a
``JobRecord``, ``TargetRecord``, ``AttemptRecord`` or ``ScheduleRecord``; a job
admitted, a target or a schedule put, an attempt and a completion become the
parameters of the store's statements. Text a peer or an operator chose is cut to its column here
(``storable``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import RowMapping

from app.core.answer import EXCERPT_BYTES, storable
from app.core.attempt import AttemptRecord, Completion
from app.core.job import ACTIVE, FailureReason, JobRecord, JobState
from app.core.outcome import Outcome
from app.core.schedule import ScheduleRecord, ScheduleSpec
from app.core.target import SPEC_FIELDS, TargetRecord, TargetSpec, disabled_reason
from app.storage.models import json_text


def job_record(row: RowMapping) -> JobRecord:
    reason = row["failure_reason"]
    return JobRecord(
        id=row["id"],
        caller=row["caller"],
        idempotency_key=row["idempotency_key"],
        target=row["target"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        delivery=row["deliveries"],
        max_attempts=row["max_attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        next_attempt_at=row["next_attempt_at"],
        expires_at=row["expires_at"],
        completed_at=row["completed_at"],
        claimed_at=row["claimed_at"],
        lease_expires_at=row["lease_expires_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        failure_reason=FailureReason(reason) if reason else None,
        payload=bytes(row["payload"]),
        headers=row["headers"],
        ordering_key=row["ordering_key"],
        callback_target=row["callback_target"],
        callback_job_id=row["callback_job_id"],
    )


def target_record(row: RowMapping) -> TargetRecord:
    fields: dict[str, Any] = {name: row[name] for name in SPEC_FIELDS}
    fields.update(headers=dict(row["headers"] or {}), enabled=bool(row["enabled"]))
    spec = TargetSpec(name=row["name"], **fields)
    return TargetRecord(
        spec=spec,
        disabled_reason=row["disabled_reason"],
        paused_until=row["paused_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def attempt_record(row: RowMapping) -> AttemptRecord:
    return AttemptRecord(
        delivery=row["n"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_ms=row["duration_ms"],
        status_code=row["status_code"],
        outcome=Outcome(row["outcome"]),
        error=row["error"],
        response_excerpt=row["response_excerpt"],
        content_type=row["content_type"],
        response_bytes=row["response_bytes"],
    )


def job_row(job: JobRecord, fingerprint: str) -> dict[str, Any]:
    """The ``jobs`` row of a job just admitted (``app.core.job.admit``), as the
    driver takes it (``values.insert_jobs``): its headers as JSON text."""
    return {
        "id": job.id,
        "caller": job.caller,
        "idempotency_key": job.idempotency_key,
        "fingerprint": fingerprint,
        "target": job.target,
        "payload": job.payload,
        "headers": None if job.headers is None else json_text(job.headers),
        "state": job.state.value,
        "attempts": job.attempts,
        "deliveries": job.delivery,
        "max_attempts": job.max_attempts,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "next_attempt_at": job.next_attempt_at,
        "expires_at": job.expires_at,
        "ordering_key": job.ordering_key,
        "callback_target": job.callback_target,
    }


def target_row(spec: TargetSpec, now: float) -> dict[str, Any]:
    """The ``targets`` row of ``spec`` put at ``now`` (``created_at`` counts on insert only)."""
    return {
        "name": spec.name,
        **{name: getattr(spec, name) for name in SPEC_FIELDS},
        "headers": dict(spec.headers),
        "disabled_reason": disabled_reason(spec),
        "created_at": now,
        "updated_at": now,
    }


def attempt_row(c: Completion) -> tuple[Any, ...]:
    """The ``attempts`` row of a completion that recorded an attempt, in the
    order of ``values.ATTEMPT_FIELDS``."""
    a = c.attempt
    assert a is not None
    return (
        c.job_id,
        a.delivery,
        a.started_at,
        a.finished_at,
        a.duration_ms,
        a.status_code,
        a.outcome.value,
        storable(a.error, 1024),
        storable(a.response_excerpt, EXCERPT_BYTES),
        storable(a.content_type, 255),
        a.response_bytes,
    )


def completion_params(c: Completion) -> dict[str, Any]:
    """One row of the completing statement's VALUES list (``values.COMPLETE_FIELDS``)."""
    d = c.decision
    a = c.attempt
    return {
        "id": c.job_id,
        "delivery": c.delivery,
        "state": d.state.value,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "completed_at": c.now if d.state not in ACTIVE else None,
        "failure_reason": d.failure_reason.value if d.failure_reason else None,
        "recorded": 1 if a else 0,
        "status_code": a.status_code if a else None,
        "error": storable(a.error, 1024) if a else None,
        "now": c.now,
        "unsent": 0 if c.sent else 1,
        "lapsed_before": c.lapsed_before,
    }


def schedule_record(row: RowMapping) -> ScheduleRecord:
    spec = ScheduleSpec(
        name=row["name"],
        cron=row["cron"],
        timezone=row["timezone"],
        target=row["target"],
        payload=bytes(row["payload"]),
        headers=dict(row["headers"] or {}),
        enabled=bool(row["enabled"]),
    )
    return ScheduleRecord(
        spec=spec,
        next_run_at=row["next_run_at"],
        last_run_at=row["last_run_at"],
        last_job_id=row["last_job_id"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def schedule_row(spec: ScheduleSpec, next_run_at: float | None, now: float) -> dict[str, Any]:
    """The ``schedules`` row of ``spec`` put at ``now``, without what its fires write
    (``created_at`` counts on insert only)."""
    return {
        "name": spec.name,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "target": spec.target,
        "payload": spec.payload,
        "headers": dict(spec.headers),
        "enabled": spec.enabled,
        "next_run_at": next_run_at,
        "created_at": now,
        "updated_at": now,
    }
