"""``/jobs``: intake, status, listing and counting, attempts, cancel and retry."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response
from starlette.types import Receive

from app.api import problems
from app.api.batch import PATH as BATCH_PATH
from app.api.batch import accept_batch, envelope
from app.api.cursors import decode_cursor, encode_cursor
from app.api.deps import CallerDep, GatewayDep, IntakeDep, Viewer, ViewerDep, ensure_accepting
from app.api.holds import hold_at_hand, holds
from app.api.intake import TRACE_PARAMETERS, accept, accepted_headers
from app.api.present import attempt_json, job_detail_json, job_json, rfc3339
from app.api.problems import documented
from app.api.schemas import (
    AttemptOut,
    BatchIn,
    BatchOut,
    FailureReasonName,
    JobCountOut,
    JobDetailOut,
    JobIn,
    JobOut,
    JobPageOut,
    StateName,
)
from app.core.errors import Forbidden, NotFound, Unprocessable
from app.core.hold import Hold
from app.core.job import TERMINAL, FailureReason, JobRecord, JobState
from app.core.ordering import MAX_KEY_CHARS
from app.gateway import Gateway
from app.storage.base import ATTEMPTS_PAGE, MAX_ATTEMPTS_PAGE, JobFilter

router = APIRouter(tags=["jobs"])

#: the longest ``Prefer: wait`` honoured, in seconds
MAX_WAIT_S = 30.0
#: attempt numbers are 32-bit integers in the database; ``after`` stays within them
MAX_ATTEMPT_NUMBER = 2**31 - 1
#: a time in a query: RFC 3339, with its offset from UTC
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"

_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": '1 to 255 visible ASCII characters; "quoted" and bare forms are one key',
    "schema": {"type": "string", "minLength": 1, "maxLength": 257},
}


_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "ETags from earlier answers; 304 while the job is still at one of them",
    "schema": {"type": "string"},
}
_PREFER_WAIT = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": (
        "wait=N (seconds, at most 30): hold the answer until the job's state changes, "
        "or it moves past the If-None-Match version, or N seconds pass"
    ),
    "schema": {"type": "string", "example": "wait=30"},
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def _etag(job: JobRecord, hold: Hold) -> str:
    """The version of the job's answer: its row's, and what holds it back as shown
    (to the millisecond: a hold's end computed again must not be a new version)."""
    held = f"{hold.by}|{rfc3339(hold.until)}"
    token = f"{job.id}|{job.state.value}|{job.attempts}|{job.updated_at!r}|{held}"
    return '"' + hashlib.blake2b(token.encode(), digest_size=12).hexdigest() + '"'


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    summary="Accept a job for delivery",
    openapi_extra={"parameters": [_KEY_PARAMETER, *TRACE_PARAMETERS]},
    responses=documented(400, 409, 413, 415, 422, 429, 503),
)
async def create_job(body: JobIn, intake: IntakeDep) -> Response:
    # Served by the intake lane (app/api/intake.py) in a running gateway; this
    # route gives OpenAPI the operation and answers it the same way.
    job, replayed = await accept(intake.gateway, intake.caller, intake.key, body, intake.trace)
    hold = hold_at_hand(intake.gateway, job)
    return _json(job_json(job, hold), 202, accepted_headers(job, replayed))


#: request bodies the routes read themselves, for OpenAPI's components
DOCUMENTED_BODIES: tuple[type[BaseModel], ...] = (BatchIn,)


@router.post(
    BATCH_PATH,
    response_model=BatchOut,
    summary="Accept up to 1000 jobs in one request, each with its own key and its own answer",
    description=(
        "Each item is the body of POST /jobs with its own `idempotency_key` (the "
        "Idempotency-Key header is not used), and gets the status and the job or the "
        "problem POST /jobs would answer it. Every accepted job is committed, in one "
        "transaction, before the answer. An item's trace context is the traceparent "
        "(and tracestate) in its own `headers`; the request's traceparent header is not used."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}}},
        }
    },
    responses=documented(400, 413, 415, 422, 503),
)
async def create_jobs_batch(request: Request, gateway: GatewayDep, caller: CallerDep) -> Response:
    # the items are judged one by one (app/api/batch.py), not by FastAPI as a whole
    ensure_accepting(gateway)
    try:
        items = envelope(await request.body())
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        return problems.invalid_body(errors, BATCH_PATH)
    return _json({"results": await accept_batch(gateway, caller, items)})


def _time(name: str, value: str | None) -> float | None:
    """A query's RFC 3339 time (its form checked by the route) in epoch seconds."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.upper()).timestamp()
    except (ValueError, OverflowError) as exc:
        message = f"not a time: {exc}"
        raise Unprocessable(
            f"{name}: {message}",
            extensions={
                "errors": [{"loc": ["query", name], "msg": message, "type": "value_error"}]
            },
        ) from None


_TIME_DESCRIPTION = "RFC 3339 with its offset, e.g. 2026-01-01T00:00:00Z"


class JobQuery(BaseModel):
    """The filter of ``GET /jobs`` and ``GET /jobs/count`` as the query names it: one
    definition of what is valid, which the dashboard's job list checks its form by too."""

    state: StateName | None = None
    target: str | None = Field(None, max_length=63)
    caller: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Only this caller's jobs; an admin key sees every caller's without it, "
        "any other key only its own",
    )
    reason: FailureReasonName | None = Field(
        None, description="Only failed jobs, failed for this reason"
    )
    created_after: str | None = Field(
        None,
        pattern=RFC3339,
        description=f"Created at or after this time; {_TIME_DESCRIPTION}",
    )
    created_before: str | None = Field(
        None, pattern=RFC3339, description=f"Created before this time; {_TIME_DESCRIPTION}"
    )
    ordering_key: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_KEY_CHARS,
        description="Only jobs with this ordering key",
    )


def filter_of(query: JobQuery, viewer: Viewer) -> JobFilter:
    """The jobs ``query`` names, within what ``viewer`` may see (``Forbidden``, or
    ``Unprocessable`` for a time that matches the pattern but is no time)."""
    if not viewer.admin and query.caller not in (None, viewer.caller):
        raise Forbidden(f"the API key '{viewer.caller}' sees only its own jobs")
    return JobFilter(
        caller=query.caller if viewer.admin else viewer.caller,
        state=JobState(query.state) if query.state else None,
        target=query.target,
        reason=FailureReason(query.reason) if query.reason else None,
        created_after=_time("created_after", query.created_after),
        created_before=_time("created_before", query.created_before),
        ordering_key=query.ordering_key,
    )


async def job_filter(viewer: ViewerDep, query: Annotated[JobQuery, Query()]) -> JobFilter:
    """The jobs ``GET /jobs`` and ``GET /jobs/count`` take, within what the caller may see."""
    return filter_of(query, viewer)


FilterDep = Annotated[JobFilter, Depends(job_filter)]


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    #: the page starts below this job (the cursor's)
    before_id: str | None


async def job_page(
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
) -> Page:
    """A page of ``GET /jobs`` (a dependency of its own so that OpenAPI lists its
    parameters after the filter's)."""
    return Page(limit=limit, before_id=decode_cursor(cursor) if cursor else None)


PageDep = Annotated[Page, Depends(job_page)]


@router.get(
    "/jobs",
    response_model=JobPageOut,
    summary="List jobs, newest first",
    responses=documented(400, 403, 422),
)
async def list_jobs(gateway: GatewayDep, where: FilterDep, page: PageDep) -> Response:
    jobs = await gateway.store.list_jobs(where, limit=page.limit + 1, before_id=page.before_id)
    shown, more = jobs[: page.limit], len(jobs) > page.limit
    return _json(
        {
            "items": [
                job_json(job, hold)
                for job, hold in zip(shown, await holds(gateway, shown), strict=True)
            ],
            "next_cursor": encode_cursor(shown[-1].id) if more else None,
        }
    )


@router.get(
    "/jobs/count",
    response_model=JobCountOut,
    summary="Count the jobs GET /jobs would list",
    responses=documented(403, 422),
)
async def count_jobs(gateway: GatewayDep, where: FilterDep) -> Response:
    return _json({"count": await gateway.store.count_jobs(where)})


@router.get(
    "/jobs/{job_id}",
    response_model=JobDetailOut,
    summary="A job's current state, with its payload and headers",
    responses={
        304: {
            "description": "Not modified (If-None-Match)",
            "headers": {"ETag": {"schema": {"type": "string"}}},
        },
        **documented(404, 422),
    },
    openapi_extra={"parameters": [_IF_NONE_MATCH, _PREFER_WAIT]},
)
async def get_job(
    job_id: str, request: Request, gateway: GatewayDep, viewer: ViewerDep
) -> Response:
    wait_s = prefer_wait(request.headers.getlist("prefer"))
    known = {t.strip() for t in request.headers.get("if-none-match", "").split(",")} - {""}
    headers: dict[str, str] = {}
    # with every place to wait taken, the request is answered as if it had not asked
    place = None if wait_s is None else gateway.watch.place(viewer.caller)
    if wait_s is None or place is None:
        job, hold = await _held_job(gateway, viewer, job_id)
    else:
        with place:
            headers["Preference-Applied"] = f"wait={wait_s:g}"
            job, hold = await _wait_for_change(
                gateway, viewer, job_id, wait_s, known, request.receive
            )
    headers["ETag"] = etag = _etag(job, hold)
    if etag in known or "*" in known:
        return Response(status_code=304, headers=headers)
    return _json(job_detail_json(job, hold), headers=headers)


async def _job(gateway: Gateway, viewer: Viewer, job_id: str) -> JobRecord:
    job = await gateway.store.get_job(viewer.scope, job_id)
    if job is None:
        raise NotFound(f"no job '{job_id}'")
    return job


async def _held_job(gateway: Gateway, viewer: Viewer, job_id: str) -> tuple[JobRecord, Hold]:
    job = await _job(gateway, viewer, job_id)
    [hold] = await holds(gateway, [job])
    return job, hold


async def _wait_for_change(
    gateway: Gateway,
    viewer: Viewer,
    job_id: str,
    wait_s: float,
    known: set[str],
    receive: Receive,
) -> tuple[JobRecord, Hold]:
    """The job once its state differs from what it was (or from the version the
    client names in ``If-None-Match``), or as it is after ``wait_s``, or as soon
    as the client has gone (``receive`` says so). Woken by the gateway's own
    notices of change (``app/watch.py``), not by polling."""
    deadline = asyncio.get_running_loop().time() + wait_s
    with gateway.watch.watching(job_id) as waiter:
        job, hold = first, _ = await _held_job(gateway, viewer, job_id)

        def moved(job: JobRecord, hold: Hold) -> bool:
            # a client naming an older version has missed a change already
            return job.state is not first.state or (bool(known) and _etag(job, hold) not in known)

        # a client that hangs up must not hold its place for the rest of the wait
        gone = asyncio.create_task(_hung_up(receive, waiter.event))
        try:
            while not moved(job, hold) and job.state not in TERMINAL:
                waiter.version = (job.state.value, job.updated_at)
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or gateway.watch.closed or gone.done():
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await waiter.event.wait()
                if gone.done():
                    break  # nobody is left to answer
                # cleared before the read, never after it: a change committed while
                # the read runs sets the event again, and the next turn sees it
                waiter.event.clear()
                job, hold = await _held_job(gateway, viewer, job_id)
        finally:
            gone.cancel()
            # waited for, not awaited: a cancellation of this request must not be
            # mistaken for the watcher's own and swallowed
            await asyncio.wait({gone})
    return job, hold


async def _hung_up(receive: Receive, wake: asyncio.Event) -> None:
    """Return (and set ``wake``) once the client has disconnected. A GET's body,
    if it sent one, is read and dropped on the way."""
    while (await receive())["type"] != "http.disconnect":
        pass
    wake.set()


def prefer_wait(values: list[str]) -> float | None:
    """Seconds from ``Prefer: wait=N`` (RFC 7240), at most ``MAX_WAIT_S``; None if absent."""
    for value in values:
        for preference in value.split(","):
            name, _, rest = preference.strip().partition("=")
            if name.strip().lower() != "wait":
                continue
            try:
                seconds = float(rest.split(";", 1)[0].strip().strip('"'))
            except ValueError:
                return None
            if not math.isfinite(seconds) or seconds < 0:
                return None
            return min(seconds, MAX_WAIT_S)
    return None


@router.get(
    "/jobs/{job_id}/attempts",
    response_model=list[AttemptOut],
    summary="A job's attempts in order, a page at a time",
    responses=documented(404, 422),
)
async def list_attempts(
    job_id: str,
    gateway: GatewayDep,
    viewer: ViewerDep,
    after: Annotated[
        int,
        Query(ge=0, le=MAX_ATTEMPT_NUMBER, description="only attempts numbered above this"),
    ] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_ATTEMPTS_PAGE, description="at most this many attempts")
    ] = ATTEMPTS_PAGE,
) -> Response:
    attempts = await gateway.store.list_attempts(viewer.scope, job_id, after=after, limit=limit)
    if attempts is None:
        raise NotFound(f"no job '{job_id}'")
    return _json([attempt_json(a) for a in attempts])


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a job that has not finished",
    responses=documented(404, 409, 422),
)
async def cancel_job(job_id: str, gateway: GatewayDep, viewer: ViewerDep) -> Response:
    job = await gateway.store.cancel(viewer.scope, job_id, gateway.clock.now())
    return _json(job_json(job))


@router.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    response_model=JobOut,
    summary="Queue a finished job again (failed, cancelled, or succeeded: send it again); "
    "attempts reset, history kept",
    responses=documented(404, 409, 422, 429),
)
async def retry_job(job_id: str, gateway: GatewayDep, viewer: ViewerDep) -> Response:
    job = await gateway.store.retry(viewer.scope, job_id, gateway.clock.now())
    gateway.wake()
    [hold] = await holds(gateway, [job])
    return _json(job_json(job, hold), 202, {"Location": f"/jobs/{job.id}"})
