"""``/jobs``: intake, status, listing, cancel and retry."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response
from starlette.types import Receive

from app.api.cursors import decode_cursor, encode_cursor
from app.api.deps import CallerDep, GatewayDep, IntakeDep
from app.api.intake import accept, accepted_headers
from app.api.present import attempt_json, job_json
from app.api.problems import documented
from app.api.schemas import AttemptOut, JobIn, JobOut, JobPageOut, StateName
from app.core.errors import NotFound
from app.core.job import TERMINAL, JobRecord, JobState
from app.gateway import Gateway
from app.storage.base import ATTEMPTS_PAGE, MAX_ATTEMPTS_PAGE

router = APIRouter(tags=["jobs"])

#: the longest ``Prefer: wait`` honoured, in seconds
MAX_WAIT_S = 30.0
#: attempt numbers are 32-bit integers in the database; ``after`` stays within them
MAX_ATTEMPT_NUMBER = 2**31 - 1

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


def _etag(job: JobRecord) -> str:
    token = f"{job.id}|{job.state.value}|{job.attempts}|{job.updated_at!r}"
    return '"' + hashlib.blake2b(token.encode(), digest_size=12).hexdigest() + '"'


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobOut,
    summary="Accept a job for delivery",
    openapi_extra={"parameters": [_KEY_PARAMETER]},
    responses=documented(400, 409, 413, 415, 422, 429, 503),
)
async def create_job(body: JobIn, intake: IntakeDep) -> Response:
    # Served by the intake lane (app/api/intake.py) in a running gateway; this
    # route gives OpenAPI the operation and answers it the same way.
    job, replayed = await accept(intake.gateway, intake.caller, intake.key, body)
    return _json(job_json(job), 202, accepted_headers(job, replayed))


@router.get(
    "/jobs",
    response_model=JobPageOut,
    summary="List jobs, newest first",
    responses=documented(400, 422),
)
async def list_jobs(
    gateway: GatewayDep,
    caller: CallerDep,
    state: Annotated[StateName | None, Query()] = None,
    target: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    before = decode_cursor(cursor) if cursor else None
    jobs = await gateway.store.list_jobs(
        caller,
        state=JobState(state) if state else None,
        target=target,
        limit=limit + 1,
        before_id=before,
    )
    page, more = jobs[:limit], len(jobs) > limit
    return _json(
        {
            "items": [job_json(job) for job in page],
            "next_cursor": encode_cursor(page[-1].id) if more else None,
        }
    )


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="A job's current state",
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
    job_id: str, request: Request, gateway: GatewayDep, caller: CallerDep
) -> Response:
    wait_s = prefer_wait(request.headers.getlist("prefer"))
    known = {t.strip() for t in request.headers.get("if-none-match", "").split(",")} - {""}
    headers: dict[str, str] = {}
    # with every place to wait taken, the request is answered as if it had not asked
    place = None if wait_s is None else gateway.watch.place(caller)
    if wait_s is None or place is None:
        job = await _job(gateway, caller, job_id)
    else:
        with place:
            headers["Preference-Applied"] = f"wait={wait_s:g}"
            job = await _wait_for_change(gateway, caller, job_id, wait_s, known, request.receive)
    headers["ETag"] = etag = _etag(job)
    if etag in known or "*" in known:
        return Response(status_code=304, headers=headers)
    return _json(job_json(job), headers=headers)


async def _job(gateway: Gateway, caller: str, job_id: str) -> JobRecord:
    job = await gateway.store.get_job(caller, job_id)
    if job is None:
        raise NotFound(f"no job '{job_id}'")
    return job


async def _wait_for_change(
    gateway: Gateway,
    caller: str,
    job_id: str,
    wait_s: float,
    known: set[str],
    receive: Receive,
) -> JobRecord:
    """The job once its state differs from what it was (or from the version the
    client names in ``If-None-Match``), or as it is after ``wait_s``, or as soon
    as the client has gone (``receive`` says so). Woken by the gateway's own
    notices of change (``app/watch.py``), not by polling."""
    deadline = asyncio.get_running_loop().time() + wait_s
    with gateway.watch.watching(job_id) as waiter:
        job = first = await _job(gateway, caller, job_id)

        def moved(job: JobRecord) -> bool:
            # a client naming an older version has missed a change already
            return job.state is not first.state or (bool(known) and _etag(job) not in known)

        # a client that hangs up must not hold its place for the rest of the wait
        gone = asyncio.create_task(_hung_up(receive, waiter.event))
        try:
            while not moved(job) and job.state not in TERMINAL:
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
                job = await _job(gateway, caller, job_id)
        finally:
            gone.cancel()
            # waited for, not awaited: a cancellation of this request must not be
            # mistaken for the watcher's own and swallowed
            await asyncio.wait({gone})
    return job


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
    caller: CallerDep,
    after: Annotated[
        int,
        Query(ge=0, le=MAX_ATTEMPT_NUMBER, description="only attempts numbered above this"),
    ] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_ATTEMPTS_PAGE, description="at most this many attempts")
    ] = ATTEMPTS_PAGE,
) -> Response:
    attempts = await gateway.store.list_attempts(caller, job_id, after=after, limit=limit)
    if attempts is None:
        raise NotFound(f"no job '{job_id}'")
    return _json([attempt_json(a) for a in attempts])


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a job that has not finished",
    responses=documented(404, 409, 422),
)
async def cancel_job(job_id: str, gateway: GatewayDep, caller: CallerDep) -> Response:
    job = await gateway.store.cancel(caller, job_id, gateway.clock.now())
    return _json(job_json(job))


@router.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    response_model=JobOut,
    summary="Queue a failed or cancelled job again, attempts reset",
    responses=documented(404, 409, 422, 429),
)
async def retry_job(job_id: str, gateway: GatewayDep, caller: CallerDep) -> Response:
    job = await gateway.store.retry(caller, job_id, gateway.clock.now())
    gateway.wake()
    return _json(job_json(job), 202, {"Location": f"/jobs/{job.id}"})
