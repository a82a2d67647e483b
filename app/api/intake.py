"""Intake: storing a job, and the lane that answers ``POST /jobs`` ahead of FastAPI.

``accept`` is what intake does once a request is known to be good: begin the
job's intake span (``app/tracing.py``) under its trace context (the body's
``traceparent`` header, else the request's, ``app/core/trace.py``), build the
job, which keeps the span's context in its headers, hand it to the store's
group commit, count it, wake the dispatcher, end the span, and say what to
answer. Producers send this request more than any other, and
FastAPI's routing, middleware stack and dependency solving cost several times
the work of storing the job, so ``IntakeLane`` answers it straight from ASGI:
the same API keys as ``AuthGuard`` (``auth.py``), the same body checks as
``RequestGuard`` (``guard.py``), the same ``Idempotency-Key`` rules, the same
``JobIn`` model, the same problems and the same HTTP metrics. The FastAPI
route in ``routes/jobs.py`` declares the operation for OpenAPI and calls the
same ``accept``. Every other request goes on to FastAPI.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from app.api import problems
from app.api.auth import caller_for
from app.api.deps import ensure_accepting, key_from
from app.api.guard import BodyProblem, Receive, Scope, Send, check_body, declared_length, read_body
from app.api.holds import hold_at_hand
from app.api.http_metrics import HttpMetrics
from app.api.present import job_json
from app.api.schemas import JobIn
from app.core import idempotency, trace
from app.core.errors import CsjdError
from app.core.ids import uuid7
from app.core.job import Enqueued, JobRecord, JobState, NewJob
from app.core.trace import TraceContext
from app.gateway import Gateway
from app.tracing import IntakeSpan

PATH = "/jobs"
_JSON = (b"content-type", b"application/json")

#: the trace headers ``IntakeLane`` reads, as OpenAPI describes them (``routes/jobs.py``)
TRACE_PARAMETERS = [
    {
        "name": name,
        "in": "header",
        "required": False,
        "description": text,
        "schema": {"type": "string"},
    }
    for name, text in (
        (
            "traceparent",
            "W3C Trace Context, e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01: kept "
            "with the job (in its headers), continued by each delivery under a new parent id; an "
            "invalid one is ignored, one in the body's headers wins",
        ),
        ("tracestate", "W3C Trace Context: kept and passed on with a valid traceparent"),
    )
]


async def accept(
    gateway: Gateway, caller: str, key: str, body: JobIn, context: TraceContext | None = None
) -> tuple[JobRecord, bool]:
    """Store the job (or find the one this key already made); (job, replayed).
    ``context`` is the request's trace context, if it named a valid one."""
    headers, span = traced(gateway, body, context, PATH)
    try:
        enqueued = await gateway.store.enqueue(
            new_job(gateway.clock.now(), caller, key, body, headers, span.context)
        )
    except BaseException as exc:
        span.refused(exc)
        raise
    span.accepted(enqueued.job, enqueued.replayed)
    if counted([enqueued], gateway):
        gateway.wake()
    return enqueued.job, enqueued.replayed


def traced(
    gateway: Gateway, body: JobIn, context: TraceContext | None, route: str
) -> tuple[Mapping[str, str], IntakeSpan]:
    """The body's headers but its trace context, and the job's intake span, begun
    under the body's trace context or else the request's ``context``."""
    headers, own = trace.from_job_headers(body.headers)
    return headers, gateway.tracing.intake(own or context, route)


def new_job(
    now: float,
    caller: str,
    key: str,
    body: JobIn,
    headers: Mapping[str, str] | None = None,
    context: TraceContext | None = None,
) -> NewJob:
    """The job ``body`` asks for at ``now``, under ``caller``'s ``key``, with
    ``headers`` (the body's, its trace context taken out, see ``traced``) and
    ``context`` (the trace context it keeps). Without ``headers``, the body's
    own trace context is kept, no span begun."""
    if headers is None:
        headers, own = trace.from_job_headers(body.headers)
        context = context or own
    if body.run_at is not None:
        next_attempt_at = max(now, body.run_at.timestamp())
    else:
        next_attempt_at = now + body.delay_s
    fields = body.model_dump(mode="json")
    if headers is not body.headers:
        # a trace context says which call sent the job, not which job it is: a
        # request sent again under a new span is the same request
        fields["headers"] = dict(headers)
    if context is not None:
        headers = trace.with_context(headers, context)
    return NewJob(
        id=uuid7(int(now * 1000)),
        caller=caller,
        idempotency_key=key,
        fingerprint=idempotency.fingerprint(body.target, fields),
        target=body.target,
        payload=orjson.dumps(body.payload),
        headers=headers or None,
        max_attempts=body.max_attempts,
        next_attempt_at=next_attempt_at,
        expires_at=body.expires_at.timestamp() if body.expires_at else None,
        created_at=now,
        refusal=body.refusal(now),
        ordering_key=body.ordering_key,
        callback_target=body.callback_target,
    )


def counted(answers: Iterable[Enqueued | CsjdError], gateway: Gateway) -> bool:
    """Count the jobs these answers made in the metrics; whether one is due to dispatch
    (then the caller wakes the dispatcher, once)."""
    due = False
    for answer in answers:
        if isinstance(answer, Enqueued) and not answer.replayed:
            gateway.metrics.target(answer.job.target).accepted.inc()
            due = due or answer.job.state is JobState.QUEUED
    return due


def accepted_headers(job: JobRecord, replayed: bool) -> dict[str, str]:
    headers = {"Location": f"/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


class IntakeLane:
    """``POST /jobs`` as a plain ASGI app, counted in ``http_metrics`` as every route is."""

    def __init__(self, gateway: Gateway, max_bytes: int, http_metrics: HttpMetrics) -> None:
        self.gateway = gateway
        self.max_bytes = max_bytes
        self._http_metrics = http_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        declared = 0
        try:
            declared, status, headers, body = await self._accept(scope, receive)
        except BodyProblem as exc:
            status, headers, body = _parts(exc.response(PATH))
        except CsjdError as exc:
            status, headers, body = _parts(problems.error_response(exc, PATH))
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            status, headers, body = _parts(problems.invalid_body(errors, PATH))
        except Exception as exc:
            status, headers, body = _parts(problems.unexpected(exc, PATH))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._http_metrics.observe(
            "POST",
            PATH,
            f"{status // 100}xx",
            declared,
            len(body),
            time.perf_counter() - started,
        )

    async def _accept(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, int, list[tuple[bytes, bytes]], bytes]:
        content_type = length = None
        keys: list[str] = []
        authorization: list[bytes] = []
        traceparents: list[str] = []
        tracestates: list[str] = []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"idempotency-key":
                keys.append(value.decode("latin-1"))
            elif name == b"authorization":
                authorization.append(value)
            elif name == b"traceparent":
                traceparents.append(value.decode("latin-1"))
            elif name == b"tracestate":
                tracestates.append(value.decode("latin-1"))
        caller = caller_for(self.gateway.keyring, authorization, PATH)
        declared = declared_length(length)
        check_body(content_type, declared, self.max_bytes)
        ensure_accepting(self.gateway)
        key = key_from(keys)
        raw = await read_body(receive, self.max_bytes)
        job_in = JobIn.model_validate_json(raw)
        context = trace.from_request(traceparents, tracestates) if traceparents else None
        job, replayed = await accept(self.gateway, caller, key, job_in, context)
        body = orjson.dumps(job_json(job, hold_at_hand(self.gateway, job)))
        headers = [_JSON, (b"content-length", str(len(body)).encode())]
        headers += [
            (name.lower().encode(), value.encode())
            for name, value in accepted_headers(job, replayed).items()
        ]
        return declared, 202, headers, body


def _parts(response: Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return response.status_code, response.raw_headers, bytes(response.body)
