"""A job as the API shows it: the JSON of ``GET /jobs/{id}`` and of its lists.

Here, not beside the API's other answers (``app/api/present.py``), because the
store renders it too: a completion callback's payload is the finished job as
``GET /jobs/{id}`` returns it (``callback.py``). Pure: records in, JSON-ready
dicts out, times as RFC 3339 UTC with milliseconds.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

import orjson

from app.core.access import ANONYMOUS
from app.core.hold import NOT_HELD, Hold
from app.core.job import JobRecord

#: the last time written and its text: a new job's answer writes one time three
#: times (created, updated, due); one tuple, so that threads never see half of it
_last: tuple[float, str] = (math.nan, "")


def rfc3339(ts: float | None) -> str | None:
    """``2026-01-01T00:00:00.000Z``; the second's text is cached (a page of jobs shares a few)."""
    global _last
    if ts is None:
        return None
    last = _last
    if last[0] == ts:
        return last[1]
    fraction, whole = math.modf(ts)  # rounded as datetime.fromtimestamp rounds
    second, micros = divmod(int(whole) * 1_000_000 + round(fraction * 1_000_000), 1_000_000)
    text = f"{_second_text(second)}.{micros // 1000:03d}Z"
    _last = (ts, text)
    return text


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
        "callback_target": job.callback_target,
        "callback_job_id": job.callback_job_id,
    }


def job_detail_json(job: JobRecord, hold: Hold = NOT_HELD) -> dict[str, Any]:
    """A job as ``GET /jobs/{id}`` shows it (``JobDetailOut``): with what it delivers."""
    return {
        **job_json(job, hold),
        # the stored bytes are the compact JSON delivered: written out as they are
        "payload": orjson.Fragment(job.payload),
        "headers": dict(job.headers or {}),
    }
