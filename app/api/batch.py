"""``POST /jobs/batch``: many jobs in one request, each answered as ``POST /jobs`` would.

The route (``routes/jobs.py``) has checked the caller, the draining gateway
and the body's size (``RequestGuard``, ``CSJD_MAX_BATCH_BYTES``); this module
takes the body apart. What is wrong with the whole request (not JSON, no
``jobs``, none or over ``MAX_BATCH_JOBS``) is one problem for the request.
Each item is then judged alone, in the order a single ``POST /jobs`` judges
its body: its size against ``CSJD_MAX_BODY_BYTES`` (413), its own
``idempotency_key`` (400), the ``JobIn`` model (422). The good ones become
jobs by the same ``traced`` and ``new_job``, each under the trace context of
its own ``headers`` (the request's ``traceparent`` is not used, as its
``Idempotency-Key`` is not), and go to the store together
(``JobStore.enqueue_many``): one commit, and each refused there (unknown
target, reused key, full backlog) refused alone. The answer holds one result
per item, in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.api import problems
from app.api.guard import BodyProblem, too_large
from app.api.holds import holds_at_hand
from app.api.intake import counted, new_job, traced
from app.api.present import job_json
from app.api.schemas import MAX_BATCH_JOBS, JobIn
from app.core import idempotency
from app.core.errors import CsjdError, InvalidIdempotencyKey
from app.core.hold import Hold
from app.core.job import Enqueued, NewJob
from app.gateway import Gateway
from app.tracing import IntakeSpan

PATH = "/jobs/batch"


class _Envelope(BaseModel):
    """The request as a whole; its items are judged one by one."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[Any] = Field(min_length=1, max_length=MAX_BATCH_JOBS)


def envelope(raw: bytes) -> list[Any]:
    """The request's items; ``ValidationError`` for a request that is wrong as a whole."""
    return _Envelope.model_validate_json(raw).jobs


async def accept_batch(gateway: Gateway, caller: str, items: list[Any]) -> list[dict[str, Any]]:
    """One result per item, in order; every job made is committed before this returns."""
    now = gateway.clock.now()
    max_bytes = gateway.settings.max_body_bytes
    results: list[dict[str, Any] | None] = []
    jobs: list[NewJob] = []
    spans: list[IntakeSpan] = []
    for item in items:
        try:
            key, body = _item(item, max_bytes)
        except (CsjdError, BodyProblem, ValidationError) as exc:
            results.append(_refused(exc))
            continue
        headers, span = traced(gateway, body, None, PATH)
        jobs.append(new_job(now, caller, key, body, headers, span.context))
        spans.append(span)
        results.append(None)
    try:
        answers = await gateway.store.enqueue_many(jobs)
    except BaseException as exc:
        for span in spans:
            span.refused(exc)
        raise
    for span, answer in zip(spans, answers, strict=True):
        if isinstance(answer, CsjdError):
            span.refused(answer)
        else:
            span.accepted(answer.job, answer.replayed)
    if counted(answers, gateway):
        gateway.wake()
    made = [answer.job for answer in answers if isinstance(answer, Enqueued)]
    held = iter(holds_at_hand(gateway, made))
    stored = iter(answers)
    return [result or _answer(next(stored), held) for result in results]


def _item(item: Any, max_bytes: int) -> tuple[str, JobIn]:
    key = None
    if isinstance(item, dict):
        item = dict(item)
        key = item.pop("idempotency_key", None)
    if _size(item) > max_bytes:
        raise too_large(max_bytes)
    if key is None:
        raise InvalidIdempotencyKey("each job's idempotency_key is required")
    if not isinstance(key, str):
        raise InvalidIdempotencyKey("the idempotency_key must be a string")
    return idempotency.parse_key(key), JobIn.model_validate(item)


def _size(item: Any) -> int:
    """The item's length as a ``POST /jobs`` body."""
    try:
        return len(orjson.dumps(item))
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, refused later
        return len(json.dumps(item, ensure_ascii=False).encode())


def _refused(exc: CsjdError | BodyProblem | ValidationError) -> dict[str, Any]:
    if isinstance(exc, CsjdError):
        problem = problems.error_body(exc, PATH)
    elif isinstance(exc, BodyProblem):
        problem = exc.body(PATH)
    else:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        problem = problems.validation_body(errors, PATH)
    return {"status": problem["status"], "problem": problem}


def _answer(answer: Enqueued | CsjdError, held: Iterator[Hold]) -> dict[str, Any]:
    """An item's result; ``held`` gives the holds of the jobs made, in order."""
    if isinstance(answer, CsjdError):
        return _refused(answer)
    return {"status": 202, "job": job_json(answer.job, next(held)), "replayed": answer.replayed}
