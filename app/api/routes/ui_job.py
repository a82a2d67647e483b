"""``/ui/jobs/{id}`` and the targets' switches: one job's page, what is done to one job.

The job page shows what a job delivers (the target's header values masked, as
``GET /targets`` masks them), every attempt, and its timeline:
``app/core/timeline.py`` over the same JSON the API answers, so the dashboard
and the CLI tell one story. An admin cancels, retries or sends again any
caller's job, as that caller (jobs stay scoped to it). A target is enabled or
disabled by the code ``PATCH /targets/{name}`` runs, so its secret and headers
are kept and the dispatcher logs the change. Forms are answered with a
redirect back to the page they came from, with a flash that says what
happened. The job list and "retry all matching" are ``ui_jobs.py``; its router
is included first, so ``/ui/jobs/retry-all`` is not read as a job id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from app.api.auth import ANONYMOUS, UI_PATH
from app.api.deps import GatewayDep
from app.api.holds import holds
from app.api.pages import flashed, form, href, page, page_clock, redirect
from app.api.present import attempt_json, job_detail_json, target_json
from app.api.routes.jobs import MAX_ATTEMPT_NUMBER
from app.api.routes.targets import apply_patch
from app.api.routes.ui_jobs import JOBS_PATH
from app.api.target_schemas import TargetPatch
from app.core.errors import CsjdError
from app.core.job import ACTIVE, RETRIABLE, JobRecord, JobState
from app.core.timeline import HELD, timeline
from app.gateway import Gateway
from app.storage.base import ATTEMPTS_PAGE

router = APIRouter(prefix=UI_PATH, include_in_schema=False)


# -- one job ------------------------------------------------------------------------------


def _pretty(payload: bytes) -> str:
    try:
        return orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:  # stored as delivered; shown as it is if it is not JSON
        return payload.decode("utf-8", "replace")


def _after(n: int) -> dict[str, str]:
    return {"after": str(n)} if n > 0 else {}


@router.get("/jobs/{job_id}")
async def job_page(job_id: str, request: Request, gateway: GatewayDep) -> Response:
    after_text = request.query_params.get("after", "0")
    after = int(after_text) if after_text.isascii() and after_text.isdigit() else -1
    if not 0 <= after <= MAX_ATTEMPT_NUMBER:
        problem = f"after: '{after_text}' is not an attempt number"
        return page(
            request, "problem.html", 400, title="No such page", problems=[problem], back=JOBS_PATH
        )
    job = await gateway.store.get_job(None, job_id)
    if job is None:
        return page(
            request,
            "problem.html",
            404,
            title="No such job",
            problems=[f"There is no job {job_id}: it never existed, or it was purged."],
            back=JOBS_PATH,
        )
    [hold] = await holds(gateway, [job])
    records = await gateway.store.list_attempts(None, job.id, after=after, limit=ATTEMPTS_PAGE + 1)
    records = records or []
    more = len(records) > ATTEMPTS_PAGE
    attempts = [attempt_json(a) for a in records[:ATTEMPTS_PAGE]]
    view = job_detail_json(job, hold)
    target = await gateway.store.get_target(job.target)
    here = f"{JOBS_PATH}/{job.id}"
    return flashed(
        request,
        "job.html",
        job=view,
        payload=_pretty(job.payload),
        target=None
        if target is None
        else target_json(
            target,
            live=gateway.dispatcher.live_state(target.name),
            backlog={},
            now=gateway.clock.now(),
        ),
        attempts=attempts,
        events=timeline(view, attempts),
        held=HELD.get(str(view["held_by"]), str(view["held_by"])),
        earlier=href(here, _after(after - ATTEMPTS_PAGE)) if after else None,
        later=href(here, {"after": str(attempts[-1]["n"])}) if more else None,
        can_cancel=job.state in ACTIVE,
        can_retry=job.state in RETRIABLE,
        here=here,
        **page_clock(gateway.clock.now()),
    )


# -- what is done to one job -----------------------------------------------------------------


def _back(fields: Mapping[str, str], default: str) -> str:
    """Where a form asks to go back to: a dashboard page, never anywhere else."""
    back = fields.get("back", "")
    if back == UI_PATH or (back.startswith((UI_PATH + "/", UI_PATH + "?")) and "\\" not in back):
        return back
    return default


def _for(job: JobRecord) -> str:
    return f" for {job.caller}" if job.caller != ANONYMOUS else ""


#: an operator's command on one job, as the store takes it: (caller, id, now)
Command = Callable[[str | None, str, float], Awaitable[JobRecord]]


async def _command(
    request: Request,
    gateway: GatewayDep,
    job_id: str,
    command: Command,
    verb: str,
    done: Callable[[JobRecord], str],
) -> Response:
    """Run ``command`` on the job as its own caller, and go back to the page it came
    from saying what happened (``done``: how the job, as it was, now stands)."""
    back = _back(await form(request), UI_PATH)
    job = await gateway.store.get_job(None, job_id)
    if job is None:
        return redirect(request, back, ("error", f"There is no job {job_id}."))
    try:
        await command(job.caller, job.id, gateway.clock.now())
    except CsjdError as exc:
        return redirect(request, back, ("error", f"Job {job.id} was not {verb}: {exc.detail}"))
    return redirect(request, back, ("ok", f"Job {job.id} {done(job)}{_for(job)}."))


@router.post("/jobs/{job_id}/retry")
async def retry(job_id: str, request: Request, gateway: GatewayDep) -> Response:
    async def retried(caller: str | None, job_id: str, now: float) -> JobRecord:
        job = await gateway.store.retry(caller, job_id, now)
        gateway.wake()
        return job

    def done(job: JobRecord) -> str:
        return "will be sent again" if job.state is JobState.SUCCEEDED else "is queued again"

    return await _command(request, gateway, job_id, retried, "retried", done)


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: str, request: Request, gateway: GatewayDep) -> Response:
    command = gateway.store.cancel
    return await _command(request, gateway, job_id, command, "cancelled", lambda _: "is cancelled")


# -- switching a target on and off ------------------------------------------------------------


async def _switch(request: Request, gateway: Gateway, name: str, enabled: bool) -> Response:
    back = _back(await form(request), UI_PATH)
    done = "enabled" if enabled else "disabled"
    current = await gateway.store.get_target(name)
    if current is not None and current.spec.enabled is enabled:
        return redirect(request, back, ("ok", f"Target {name} was already {done}."))
    try:
        await apply_patch(gateway, name, TargetPatch.model_validate({"enabled": enabled}))
    except CsjdError as exc:
        return redirect(request, back, ("error", f"Target {name} was not {done}: {exc.detail}"))
    except RequestValidationError as exc:
        why = "; ".join(str(e.get("msg", "")) for e in exc.errors())
        return redirect(request, back, ("error", f"Target {name} was not {done}: {why}"))
    if enabled:
        said = f"Target {name} is enabled: its jobs are sent again."
    else:
        said = f"Target {name} is disabled: its jobs wait until it is enabled again."
    return redirect(request, back, ("ok", said + " Its secret and headers are kept."))


@router.post("/targets/{name}/enable")
async def enable_target(name: str, request: Request, gateway: GatewayDep) -> Response:
    return await _switch(request, gateway, name, enabled=True)


@router.post("/targets/{name}/disable")
async def disable_target(name: str, request: Request, gateway: GatewayDep) -> Response:
    return await _switch(request, gateway, name, enabled=False)
