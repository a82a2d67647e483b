"""``/ui/jobs``: what an operator does to a job from the dashboard.

An admin acts on any caller's job, as that caller (jobs stay scoped to it).
Forms are POSTed and answered with a redirect back to the page they came from,
with a flash that says what happened. No CSRF token: the session cookie is
SameSite=Strict, so a form posted from another site arrives without it and
``AuthGuard`` refuses it (401).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.auth import ANONYMOUS, UI_PATH
from app.api.deps import GatewayDep
from app.api.pages import redirect
from app.core.errors import CsjdError

router = APIRouter(prefix=UI_PATH, include_in_schema=False)


@router.post("/jobs/{job_id}/retry")
async def retry(job_id: str, request: Request, gateway: GatewayDep) -> Response:
    job = await gateway.store.get_job(None, job_id)
    if job is None:
        return redirect(request, UI_PATH, ("error", f"There is no job {job_id}."))
    try:
        await gateway.store.retry(job.caller, job.id, gateway.clock.now())
    except CsjdError as exc:
        return redirect(request, UI_PATH, ("error", f"Job {job.id} was not retried: {exc.detail}"))
    gateway.wake()
    owner = f" for {job.caller}" if job.caller != ANONYMOUS else ""
    return redirect(request, UI_PATH, ("ok", f"Job {job.id} is queued again{owner}."))
