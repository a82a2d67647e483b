"""``/ui``: the operator's dashboard, server-rendered HTML behind the API's own keys.

One page shows every target's live state (breaker, pause, concurrency limit,
backlog), the jobs accepted and finished per minute over the last quarter of
an hour (both from the per-target counts the store keeps, so a refresh costs
the same however many jobs are stored), and the failed jobs of every caller,
each with a button that queues it again on behalf of its caller. Templates
are Jinja2 with autoescaping on, so nothing a caller or a target sent can
become markup; the pages carry no script at all, and their
Content-Security-Policy says so. The page machinery
is ``app/api/pages.py``; what is done to a job is ``app/api/routes/ui_jobs.py``.

With API keys configured, ``GET /ui/login`` asks for an admin token and
``POST /ui/login`` keeps it in an HttpOnly, SameSite=Strict cookie that
``AuthGuard`` (``app/api/auth.py``) reads for ``/ui`` paths only.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.auth import ANONYMOUS, UI_COOKIE, UI_LOGIN_PATH, UI_PATH
from app.api.deps import GatewayDep
from app.api.pages import FLASH_COOKIE, SESSION_S, ago, form, page, redirect, secure, take_flash
from app.api.present import rfc3339, target_json
from app.core.access import KeyRole
from app.core.job import JobState
from app.storage.base import Activity, JobFilter
from app.storage.counts import MINUTE_S, minute_of

router = APIRouter(prefix=UI_PATH, include_in_schema=False)

#: the throughput window: this many minutes, the last one the minute now is in
WINDOW_BUCKETS = 15
FAILED_SHOWN = 50
REFRESH_S = 10
_SPARKS = "▁▂▃▄▅▆▇█"


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
        return self.total / len(self.counts) if self.counts else 0.0


def throughput(
    rows: list[Activity], names: list[str], since: int, buckets: int
) -> dict[str, dict[str, Series]]:
    """Per target (every one named, and any other that had jobs), a ``Series`` per kind,
    a bucket per minute from the one starting at ``since``."""
    kinds = ("accepted", "succeeded", "failed")
    counts: dict[str, dict[str, list[int]]] = {}
    for name in [*names, *sorted({r.target for r in rows} - set(names))]:
        counts[name] = {kind: [0] * buckets for kind in kinds}
    for row in rows:
        bucket = (row.minute - since) // MINUTE_S
        if 0 <= bucket < buckets:
            for kind in kinds:
                counts[row.target][kind][bucket] += getattr(row, kind)
    return {
        name: {kind: Series(values) for kind, values in kinds.items()}
        for name, kinds in counts.items()
    }


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
    # the last WINDOW_BUCKETS minutes, the one now is in last
    since = minute_of(now) - (WINDOW_BUCKETS - 1) * MINUTE_S
    activity = await gateway.store.activity(since, since + WINDOW_BUCKETS * MINUTE_S)
    failed = await gateway.store.list_jobs(
        JobFilter(state=JobState.FAILED), limit=FAILED_SHOWN + 1, before_id=None
    )
    response = page(
        request,
        "overview.html",
        targets=targets,
        throughput=throughput(activity, [t.name for t in records], since, WINDOW_BUCKETS),
        window_minutes=WINDOW_BUCKETS,
        failed=failed[:FAILED_SHOWN],
        more_failed=len(failed) > FAILED_SHOWN,
        flash=take_flash(request),
        now=now,
        now_text=rfc3339(now),
        rfc3339=rfc3339,
        ago=ago,
        refresh_s=REFRESH_S,
        anonymous=ANONYMOUS,
    )
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=UI_PATH)
    return response


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
