"""Records as the JSON the API promises (times as RFC 3339 UTC)."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

import orjson

from app.api.auth import ANONYMOUS
from app.api.schemas import MASK
from app.core.attempt import AttemptRecord
from app.core.hold import NOT_HELD, Hold
from app.core.job import JobRecord
from app.core.schedule import ScheduleRecord
from app.core.target import SPEC_FIELDS, TargetRecord
from app.dispatch.loop import LiveState


def rfc3339(ts: float | None) -> str | None:
    """``2026-01-01T00:00:00.000Z``; the second's text is cached (a page of jobs shares a few)."""
    if ts is None:
        return None
    fraction, whole = math.modf(ts)  # rounded as datetime.fromtimestamp rounds
    second, micros = divmod(int(whole) * 1_000_000 + round(fraction * 1_000_000), 1_000_000)
    return f"{_second_text(second)}.{micros // 1000:03d}Z"


@functools.lru_cache(maxsize=1024)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def job_json(job: JobRecord, hold: Hold = NOT_HELD) -> dict[str, Any]:
    """A job as every answer shows it (``JobOut``); ``hold`` is what holds it back."""
    return {
        "id": job.id,
        "idempotency_key": job.idempotency_key,
        "caller": None if job.caller == ANONYMOUS else job.caller,
        "target": job.target,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "next_attempt_at": rfc3339(job.next_attempt_at),
        "expires_at": rfc3339(job.expires_at),
        "completed_at": rfc3339(job.completed_at),
        "last_status_code": job.last_status_code,
        "last_error": job.last_error,
        "failure_reason": job.failure_reason.value if job.failure_reason else None,
        "held_by": hold.by.value if hold.by else None,
        "held_until": rfc3339(hold.until),
        "ordering_key": job.ordering_key,
    }


def job_detail_json(job: JobRecord, hold: Hold = NOT_HELD) -> dict[str, Any]:
    """A job as ``GET /jobs/{id}`` shows it (``JobDetailOut``): with what it delivers."""
    return {
        **job_json(job, hold),
        # the stored bytes are the compact JSON delivered: written out as they are
        "payload": orjson.Fragment(job.payload),
        "headers": dict(job.headers or {}),
    }


def attempt_json(attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "n": attempt.delivery,
        "started_at": rfc3339(attempt.started_at),
        "finished_at": rfc3339(attempt.finished_at),
        "duration_ms": attempt.duration_ms,
        "status_code": attempt.status_code,
        "outcome": attempt.outcome.value,
        "error": attempt.error,
        "response_excerpt": attempt.response_excerpt,
        "content_type": attempt.content_type,
        "response_bytes": attempt.response_bytes,
    }


def target_json(
    target: TargetRecord, *, live: LiveState | None, backlog: dict[str, int], now: float
) -> dict[str, Any]:
    spec = target.spec
    paused = target.paused_until if target.paused_until and target.paused_until > now else None
    view = {"name": spec.name, **{field: getattr(spec, field) for field in SPEC_FIELDS}}
    # write-only: an answer says whether they are set, never what they hold
    view["secret"] = MASK if spec.secret else None
    view["headers"] = dict.fromkeys(spec.headers, MASK)
    return {
        **view,
        "created_at": rfc3339(target.created_at),
        "updated_at": rfc3339(target.updated_at),
        "state": {
            "breaker": live.breaker if live else "closed",
            "breaker_reopens_at": rfc3339(live.breaker_reopens_at) if live else None,
            "paused_until": rfc3339(paused),
            "concurrency_limit": live.concurrency_limit if live else spec.max_concurrency,
            "inflight": live.inflight if live else 0,
            "backlog": {
                state: backlog.get(state, 0)
                for state in ("scheduled", "queued", "running", "retrying")
            },
            "disabled_reason": None if spec.enabled else target.disabled_reason,
        },
    }


def schedule_json(schedule: ScheduleRecord) -> dict[str, Any]:
    """A schedule as every answer shows it (``ScheduleOut``)."""
    spec = schedule.spec
    return {
        "name": spec.name,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "target": spec.target,
        # the stored bytes are the compact JSON each job delivers
        "payload": orjson.Fragment(spec.payload),
        "headers": dict(spec.headers),
        "enabled": spec.enabled,
        "next_run_at": rfc3339(schedule.next_run_at),
        "last_run_at": rfc3339(schedule.last_run_at),
        "last_job_id": schedule.last_job_id,
        "last_error": schedule.last_error,
        "created_at": rfc3339(schedule.created_at),
        "updated_at": rfc3339(schedule.updated_at),
    }
