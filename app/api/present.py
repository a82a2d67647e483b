"""Records as the JSON the API promises (times as RFC 3339 UTC).

A job's JSON is the core's (``app/core/render.py``): a completion callback
delivers the job as ``GET /jobs/{id}`` shows it, from inside the store.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.api.schemas import MASK
from app.core.attempt import AttemptRecord
from app.core.render import job_detail_json, job_json, rfc3339
from app.core.schedule import ScheduleRecord
from app.core.target import SPEC_FIELDS, TargetRecord
from app.dispatch.loop import LiveState

__all__ = [
    "attempt_json",
    "job_detail_json",
    "job_json",
    "rfc3339",
    "schedule_json",
    "target_json",
]


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
