"""Completion callbacks: the job a job's ending sends to its ``callback_target``.

A job given ``callback_target`` calls back each time it becomes terminal: the
store enqueues, in the transaction that made it terminal (an outbox, never
"after"), one ordinary job of the same caller to that target, whose payload is
``{"type": "job.<state>", "job": <the job as GET /jobs/{id} returns it>}`` and
whose idempotency key is ``callback:<job id>:<n>``, ``n`` counting the job's
endings (a retried job that ends again calls back again). A transaction run
again finds the key taken and replays it, so a crash can neither lose nor
double a callback. A callback job has no callback of its own; it carries the
job's trace context, so a producer's trace goes on into the callback's target.

What the callback is is decided here; the stores make it in their terminal
writes (``app/storage/endings.py``, ``memory.py``).
"""

from __future__ import annotations

from dataclasses import replace

import orjson

from app.core import idempotency
from app.core.ids import uuid7
from app.core.job import TERMINAL, JobRecord, NewJob
from app.core.render import job_detail_json
from app.core.trace import TRACEPARENT, TRACESTATE

_TRACE = (TRACEPARENT, TRACESTATE)


def callback_key(job_id: str, n: int) -> str:
    """The idempotency key of job ``job_id``'s ``n``-th callback (from 1)."""
    return f"callback:{job_id}:{n}"


def callback_for(job: JobRecord, n: int, now: float) -> NewJob:
    """The callback of ``job``'s ``n``-th ending, which just happened at ``now``."""
    assert job.callback_target is not None
    assert job.state in TERMINAL
    callback_id = uuid7(int(now * 1000))
    # the job as it reads once this callback is stored: naming it
    shown = replace(job, callback_job_id=callback_id)
    payload = orjson.dumps({"type": f"job.{job.state.value}", "job": job_detail_json(shown)})
    return NewJob(
        id=callback_id,
        caller=job.caller,
        idempotency_key=callback_key(job.id, n),
        # what it stands for: this ending of that job, to that target
        fingerprint=idempotency.fingerprint(job.callback_target, {"job": job.id, "n": n}),
        target=job.callback_target,
        payload=payload,
        # the job's trace goes on into its callback (``trace.py``)
        headers={k: v for k, v in (job.headers or {}).items() if k in _TRACE} or None,
        max_attempts=None,
        next_attempt_at=now,
        expires_at=None,
        created_at=now,
        callback_of=job.id,
    )
