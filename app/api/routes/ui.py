"""``/ui``: the operator's dashboard, server-rendered HTML behind the API's own keys.

One page shows every target's live state (breaker, pause, concurrency limit,
backlog), every schedule with its next and last fire, the jobs accepted and
finished per minute over the last quarter of an hour (counted and charted),
and the failed jobs of every caller, each with
a button that queues it again on behalf of its caller. The page is whole
without script; its one script (``app/static/live.js``, at
``/ui/static/live.js``) polls ``/ui/live.json`` every few seconds and
redraws the counts, the states and the chart in place, and keeps relative
times current. What the overview shows is built in ``app/api/dashboard.py``,
for the page and the JSON alike; templates are Jinja2 with autoescaping on,
so nothing a caller or a target sent can become markup. The page machinery
(and the Content-Security-Policy that lets only that script run) is
``app/api/pages.py``; what is done to a job is ``app/api/routes/ui_jobs.py``.

With API keys configured, ``GET /ui/login`` asks for an admin token and
``POST /ui/login`` keeps it in an HttpOnly, SameSite=Strict cookie that
``AuthGuard`` (``app/api/auth.py``) reads for ``/ui`` paths only (the JSON
and the script included).
"""

from __future__ import annotations

from urllib.parse import quote

import orjson
from fastapi import APIRouter, HTTPException, Request
from starlette.responses import Response

from app.api import dashboard
from app.api.auth import ANONYMOUS, UI_COOKIE, UI_LOGIN_PATH, UI_PATH
from app.api.deps import GatewayDep
from app.api.pages import (
    FLASH_COOKIE,
    HEADERS,
    SESSION_S,
    form,
    moment,
    page,
    redirect,
    script,
    secure,
    take_flash,
)
from app.core.access import KeyRole
from app.core.job import JobState
from app.storage.base import JobFilter

router = APIRouter(prefix=UI_PATH, include_in_schema=False)

FAILED_SHOWN = 50
#: how often the page's script asks for ``/ui/live.json``
POLL_S = 5
#: how often the page reloads itself where no script runs
REFRESH_S = 10
LIVE_SCRIPT = "live.js"
_FAILED = JobFilter(state=JobState.FAILED)


# -- the overview ------------------------------------------------------------------


@router.get("")
async def overview(request: Request, gateway: GatewayDep) -> Response:
    view = await dashboard.overview(gateway)
    failed = await gateway.store.list_jobs(_FAILED, limit=FAILED_SHOWN + 1, before_id=None)
    schedules = await gateway.store.list_schedules()
    response = page(
        request,
        "overview.html",
        view=view,
        frame=dashboard.FRAME,
        targets=view.targets,
        schedules=schedules,
        failed=failed[:FAILED_SHOWN],
        more_failed=len(failed) > FAILED_SHOWN,
        flash=take_flash(request),
        now=view.now,
        moment=moment,
        refresh_s=REFRESH_S,
        poll_s=POLL_S,
        live_script=script(LIVE_SCRIPT).path,
        anonymous=ANONYMOUS,
    )
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=UI_PATH)
    return response


@router.get("/live.json")
async def live(gateway: GatewayDep) -> Response:
    """The overview's numbers, for its script: a row per target, never a job."""
    view = await dashboard.overview(gateway)
    newest = await gateway.store.list_jobs(_FAILED, limit=1, before_id=None)
    body = dashboard.live_json(view, newest_failed=newest[0].id if newest else None)
    return Response(orjson.dumps(body), media_type="application/json", headers=HEADERS)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name != LIVE_SCRIPT:
        raise HTTPException(404)
    return Response(
        script(name).body,
        media_type="text/javascript",
        # its path carries a hash of its body (pages.script)
        headers={**HEADERS, "Cache-Control": "private, max-age=31536000, immutable"},
    )


# -- signing in and out --------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, gateway: GatewayDep) -> Response:
    if not gateway.keyring.enabled:
        return redirect(request, UI_PATH)
    return page(request, "login.html", error=None)


@router.post("/login")
async def login(request: Request, gateway: GatewayDep) -> Response:
    if not gateway.keyring.enabled:
        return redirect(request, UI_PATH)
    token = (await form(request)).get("token", "").strip()
    key = gateway.keyring.identify(token) if token else None
    if key is None:
        return page(request, "login.html", 401, error="That token is not a known API key.")
    if key.role is not KeyRole.ADMIN:
        return page(
            request,
            "login.html",
            403,
            error=(
                f"The API key '{key.name}' is a {key.role} key: it may send jobs, "
                "but the dashboard needs an admin key."
            ),
        )
    response = redirect(request, UI_PATH)
    response.set_cookie(
        UI_COOKIE,
        quote(token, safe=""),
        max_age=SESSION_S,
        path=UI_PATH,
        httponly=True,
        samesite="strict",
        secure=secure(request),
    )
    return response


@router.post("/logout")
async def logout(request: Request, gateway: GatewayDep) -> Response:
    response = redirect(request, UI_LOGIN_PATH if gateway.keyring.enabled else UI_PATH)
    response.delete_cookie(UI_COOKIE, path=UI_PATH, httponly=True, samesite="strict")
    return response
