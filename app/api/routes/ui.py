"""``/ui``: the operator's dashboard, server-rendered HTML behind the API's own keys.

One page shows every target's live state (breaker, pause, concurrency limit,
backlog), the jobs accepted and finished per minute over the last quarter of
an hour, and the failed jobs of every caller, each with a button that queues
it again on behalf of its caller. Templates are Jinja2 with autoescaping on,
so nothing a caller or a target sent can become markup; the pages carry no
script at all, and their Content-Security-Policy says so.

With API keys configured, ``GET /ui/login`` asks for an admin token and
``POST /ui/login`` keeps it in an HttpOnly, SameSite=Strict cookie that
``AuthGuard`` (``app/api/auth.py``) reads for ``/ui`` paths only. Forms are
POSTed and answered with a redirect (POST-redirect-GET); what happened is
told once, through a short-lived flash cookie.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import orjson
from fastapi import APIRouter, Request
from jinja2 import Environment, PackageLoader
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.api.auth import ANONYMOUS, SCOPE_KEY, UI_COOKIE, UI_LOGIN_PATH, UI_PATH
from app.api.deps import GatewayDep
from app.api.present import rfc3339, target_json
from app.core.access import KeyRole
from app.core.errors import CsjdError
from app.core.job import JobState
from app.storage.base import Activity, JobFilter

router = APIRouter(prefix=UI_PATH, include_in_schema=False)

#: the throughput window: this many buckets of this many seconds, the last one ending now
WINDOW_BUCKETS = 15
BUCKET_S = 60.0
FAILED_SHOWN = 50
REFRESH_S = 10
#: how long a signed-in browser keeps its token
SESSION_S = 12 * 3600
FLASH_COOKIE = "csjd_ui_flash"
_SPARKS = "▁▂▃▄▅▆▇█"
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # no script may run, no other page may frame this one, forms post only here
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


@functools.cache
def templates() -> Environment:
    return Environment(
        loader=PackageLoader("app", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    gateway = request.app.state.gateway
    html = (
        templates()
        .get_template(template)
        .render(
            auth=gateway.keyring.enabled,
            signed_in_as=request.scope.get(SCOPE_KEY, ANONYMOUS),
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _redirect(request: Request, to: str, flash: tuple[str, str] | None = None) -> Response:
    response = RedirectResponse(to, status_code=303, headers=_HEADERS)
    if flash is not None:
        response.set_cookie(
            FLASH_COOKIE,
            quote(orjson.dumps(flash).decode()),
            max_age=60,
            path=UI_PATH,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )
    return response


def _take_flash(request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        kind, text = orjson.loads(unquote(raw))
        return str(kind), str(text)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None


async def _form(request: Request) -> dict[str, str]:
    # Read by hand: RequestGuard relabels a form body as JSON (``curl -d``), and
    # the dashboard's forms have one field at most.
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


# -- the overview ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One kind of count for one target, a number per bucket, oldest first."""

    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def spark(self) -> str:
        top = max(self.counts, default=0)
        if top == 0:
            return "·" * len(self.counts)
        # nothing is a dot, the busiest bucket the full block
        return "".join(
            "·" if n == 0 else _SPARKS[n * (len(_SPARKS) - 1) // top] for n in self.counts
        )

    @property
    def per_minute(self) -> float:
        minutes = len(self.counts) * BUCKET_S / 60
        return self.total / minutes if minutes else 0.0


def throughput(
    rows: list[Activity], names: list[str], buckets: int
) -> dict[str, dict[str, Series]]:
    """Per target (every one named, and any other that had jobs), a ``Series`` per kind."""
    counts: dict[str, dict[str, list[int]]] = {}
    for name in [*names, *sorted({r.target for r in rows} - set(names))]:
        counts[name] = {kind: [0] * buckets for kind in ("accepted", "succeeded", "failed")}
    for row in rows:
        if 0 <= row.bucket < buckets and row.kind in counts[row.target]:
            counts[row.target][row.kind][row.bucket] += row.count
    return {
        name: {kind: Series(values) for kind, values in kinds.items()}
        for name, kinds in counts.items()
    }


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    seconds = max(0, int(now - ts))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172_800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


@router.get("")
async def overview(request: Request, gateway: GatewayDep) -> Response:
    now = gateway.clock.now()
    records = await gateway.store.list_targets()
    backlog = await gateway.store.backlog_by_target()
    targets = [
        target_json(
            t, live=gateway.dispatcher.live_state(t.name), backlog=backlog.get(t.name, {}), now=now
        )
        for t in records
    ]
    since = now - WINDOW_BUCKETS * BUCKET_S
    activity = await gateway.store.activity(since, now, BUCKET_S)
    failed = await gateway.store.list_jobs(
        JobFilter(state=JobState.FAILED), limit=FAILED_SHOWN + 1, before_id=None
    )
    response = _page(
        request,
        "overview.html",
        targets=targets,
        throughput=throughput(activity, [t.name for t in records], WINDOW_BUCKETS),
        window_minutes=int(WINDOW_BUCKETS * BUCKET_S / 60),
        failed=failed[:FAILED_SHOWN],
        more_failed=len(failed) > FAILED_SHOWN,
        flash=_take_flash(request),
        now=now,
        now_text=rfc3339(now),
        rfc3339=rfc3339,
        ago=_ago,
        refresh_s=REFRESH_S,
        anonymous=ANONYMOUS,
    )
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=UI_PATH)
    return response


@router.post("/jobs/{job_id}/retry")
async def retry(job_id: str, request: Request, gateway: GatewayDep) -> Response:
    # An admin retries any caller's job, as that caller (jobs stay scoped to it).
    # No CSRF token: the session cookie is SameSite=Strict, so a form posted from
    # another site arrives without it and AuthGuard refuses it (401).
    job = await gateway.store.get_job(None, job_id)
    if job is None:
        return _redirect(request, UI_PATH, ("error", f"There is no job {job_id}."))
    try:
        await gateway.store.retry(job.caller, job.id, gateway.clock.now())
    except CsjdError as exc:
        return _redirect(request, UI_PATH, ("error", f"Job {job.id} was not retried: {exc.detail}"))
    gateway.wake()
    owner = f" for {job.caller}" if job.caller != ANONYMOUS else ""
    return _redirect(request, UI_PATH, ("ok", f"Job {job.id} is queued again{owner}."))


# -- signing in and out --------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, gateway: GatewayDep) -> Response:
    if not gateway.keyring.enabled:
        return _redirect(request, UI_PATH)
    return _page(request, "login.html", error=None)


@router.post("/login")
async def login(request: Request, gateway: GatewayDep) -> Response:
    if not gateway.keyring.enabled:
        return _redirect(request, UI_PATH)
    token = (await _form(request)).get("token", "").strip()
    key = gateway.keyring.identify(token) if token else None
    if key is None:
        return _page(request, "login.html", 401, error="That token is not a known API key.")
    if key.role is not KeyRole.ADMIN:
        return _page(
            request,
            "login.html",
            403,
            error=(
                f"The API key '{key.name}' is a {key.role} key: it may send jobs, "
                "but the dashboard needs an admin key."
            ),
        )
    response = _redirect(request, UI_PATH)
    response.set_cookie(
        UI_COOKIE,
        quote(token, safe=""),
        max_age=SESSION_S,
        path=UI_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.post("/logout")
async def logout(request: Request, gateway: GatewayDep) -> Response:
    response = _redirect(request, UI_LOGIN_PATH if gateway.keyring.enabled else UI_PATH)
    response.delete_cookie(UI_COOKIE, path=UI_PATH, httponly=True, samesite="strict")
    return response
