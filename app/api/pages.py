"""The dashboard's page machinery: templates, the headers every page carries, redirects,
flashes, times, and the one script.

Every ``/ui`` route renders through ``page`` and answers a form through
``redirect`` (POST-redirect-GET); what happened is told once, through a
short-lived flash cookie. Templates are Jinja2 with autoescaping on, so nothing
a caller or a target sent can become markup. Times are shown relative ("2 min
ago", ``moment``) with the exact time on hover. The only script is
``app/static/live.js``, served from the package (``script``) and allowed by
the Content-Security-Policy as the only code the pages may run, talking only
to their own origin. The routes themselves live in ``app/api/routes/ui.py``
(overview, sign-in) and ``app/api/routes/ui_jobs.py`` (jobs and what an
operator does to them).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

import orjson
from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.api.auth import ANONYMOUS, SCOPE_KEY, UI_PATH
from app.api.present import rfc3339

#: how long a signed-in browser keeps its token
SESSION_S = 12 * 3600
FLASH_COOKIE = "csjd_ui_flash"
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # only the dashboard's own script may run, and it may only fetch from here; no
    # other page may frame this one; forms post only here
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; "
        "style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
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


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
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
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def redirect(request: Request, to: str, flash: tuple[str, str] | None = None) -> Response:
    response = RedirectResponse(to, status_code=303, headers=HEADERS)
    if flash is not None:
        response.set_cookie(
            FLASH_COOKIE,
            quote(orjson.dumps(flash).decode()),
            max_age=60,
            path=UI_PATH,
            httponly=True,
            samesite="strict",
            secure=secure(request),
        )
    return response


def take_flash(request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        kind, text = orjson.loads(unquote(raw))
        return str(kind), str(text)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None


async def form(request: Request) -> dict[str, str]:
    # Read by hand: RequestGuard relabels a form body as JSON (``curl -d``), and
    # the dashboard's forms have one field at most.
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


def flashed(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """``page``, with the flash a redirect left for it shown, and then forgotten."""
    response = page(request, template, status, flash=take_flash(request), **context)
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=UI_PATH)
    return response


def moment(ts: float | str | None, now: float) -> Markup:
    """A time as the pages show it: relative to ``now``, the exact RFC 3339 time on
    hover; ``live.js`` keeps the words current. ``ts``: epoch seconds, or RFC 3339."""
    if ts is None:
        return Markup("")
    if isinstance(ts, str):
        exact, ts = escape(ts), datetime.fromisoformat(ts).timestamp()
    else:
        exact = escape(rfc3339(ts))
    # an f-string of escaped parts: Markup.format cost a page of 50 times 1.5 ms
    return Markup(f'<time datetime="{exact}" title="{exact}">{when(ts, now)}</time>')


@dataclass(frozen=True, slots=True)
class Script:
    """A script of the package (``app/static``), and the path the pages load it from."""

    body: bytes
    #: changes with the body, so a browser may keep the script as long as it likes
    path: str


@functools.cache
def script(name: str) -> Script:
    body = resources.files("app").joinpath("static", name).read_bytes()
    version = hashlib.sha256(body).hexdigest()[:12]
    return Script(body=body, path=f"{UI_PATH}/static/{name}?v={version}")


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    return f"{_span(now - ts)} ago"


def when(ts: float | None, now: float) -> str:
    """``ago`` for a time gone by, ``in 5 min`` for one to come (``live.js`` words a
    time the same way)."""
    if ts is None:
        return ""
    return f"in {_span(ts - now)}" if ts > now else ago(ts, now)


def _span(seconds_: float) -> str:
    seconds = max(0, int(seconds_))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def epoch(text: str | None) -> float | None:
    """A time as the API writes it (RFC 3339) in epoch seconds."""
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def href(path: str, params: Mapping[str, str]) -> str:
    """A link to ``path`` with ``params`` as its query (none: the bare path)."""
    return f"{path}?{urlencode(params)}" if params else path


def page_clock(now: float) -> dict[str, Any]:
    """What every page's times need: a relative time for an RFC 3339 one, at one ``now``."""

    def relative(text: str | None) -> str:
        return when(epoch(text), now)

    return {"now": now, "relative": relative}
