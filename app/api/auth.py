"""Who is calling, at the HTTP edge: bearer tokens, roles per route, 401 and 403.

``caller_for`` reads a request's ``Authorization: Bearer`` header, finds its
key in the ``Keyring`` (``app/core/access.py``) and checks the key's role
against the route: ``/jobs`` and below take any key, every other route but
the open ones (health, metrics, the schema and its pages) takes an ``admin``
key. It answers the caller's name, which scopes jobs and idempotency keys;
with no keys configured everyone is the one anonymous caller. ``AuthGuard``
applies it in front of every FastAPI route and leaves the name in the ASGI
scope; the intake lane calls ``caller_for`` itself. ``document`` adds the
scheme, and the 401 and 403 answers, to the OpenAPI document.

The dashboard (``/ui``, ``routes/ui.py``) is an admin route like any other,
but a browser cannot send a bearer header when it follows a link, so there
(and only there) the token may also come from the cookie ``POST /ui/login``
sets; a page asked for without an admin credential redirects to the login
form instead of answering a problem.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse

from app.api import problems
from app.api.guard import ASGIApp, Receive, Scope, Send
from app.core.access import ANONYMOUS as ANONYMOUS
from app.core.access import Keyring, KeyRole
from app.core.errors import CsjdError, Forbidden, Unauthenticated

#: where ``AuthGuard`` leaves the caller's name in the ASGI scope
SCOPE_KEY = "csjd.caller"
UI_PATH = "/ui"
UI_LOGIN_PATH = "/ui/login"
#: holds the admin token (percent-encoded) a browser signed in to the dashboard with
UI_COOKIE = "csjd_ui"
_ORIGIN_HEADERS = frozenset({b"sec-fetch-site", b"origin", b"host"})
OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        # the pages' own assets (app/main.py's DOCS_ASSETS)
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/docs/assets/redoc.standalone.js",
        "/docs/assets/favicon.png",
        UI_LOGIN_PATH,
        "/ui/logout",
    }
)


def required_role(path: str) -> KeyRole | None:
    """The role a path needs (None: open to anyone)."""
    if path in OPEN_PATHS:
        return None
    if path == "/jobs" or path.startswith("/jobs/"):
        return KeyRole.PRODUCER
    return KeyRole.ADMIN


def caller_for(keyring: Keyring, authorization: list[bytes], path: str) -> str:
    """The caller's name; ``Unauthenticated`` or ``Forbidden`` when it may not go on."""
    if not keyring.enabled:
        return ANONYMOUS
    needed = required_role(path)
    if needed is None:
        return ANONYMOUS
    if not authorization:
        raise Unauthenticated(
            "send an API key as 'Authorization: Bearer <token>'", token_given=False
        )
    scheme, _, token = authorization[0].decode("latin-1").strip().partition(" ")
    token = token.strip()
    if len(authorization) > 1 or scheme.lower() != "bearer" or not token:
        raise Unauthenticated(
            "send exactly one 'Authorization: Bearer <token>' header", token_given=False
        )
    key = keyring.identify(token)
    if key is None:
        raise Unauthenticated("the bearer token is not a known API key", token_given=True)
    if not key.role.allows(needed):
        raise Forbidden(f"the API key '{key.name}' has the role {key.role}; {path} needs {needed}")
    return key.name


def is_ui(path: str) -> bool:
    return path == UI_PATH or path.startswith(UI_PATH + "/")


def ui_cookie_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token in the dashboard's cookie, if the request carries one."""
    for name, value in headers:
        if name == b"cookie":
            token = cookie_parser(value.decode("latin-1")).get(UI_COOKIE)
            if token:
                return unquote(token)
    return None


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_same_origin(headers: list[tuple[bytes, bytes]]) -> None:
    """``Forbidden`` unless the browser says the request comes from the page's own
    origin; a client that says nothing (not a browser, so no CSRF) may go on."""
    found = {name: value for name, value in headers if name in _ORIGIN_HEADERS}
    fetch_site = found.get(b"sec-fetch-site")
    if fetch_site is not None:
        same = fetch_site in (b"same-origin", b"none")
    elif (origin := found.get(b"origin")) is not None:
        netloc = urlsplit(origin.decode("latin-1")).netloc
        same = bool(netloc) and netloc.lower() == found.get(b"host", b"").decode("latin-1").lower()
    else:
        same = True
    if not same:
        raise Forbidden("the dashboard takes forms only from its own pages")


class AuthGuard:
    """``caller_for`` in front of every FastAPI route."""

    def __init__(self, app: ASGIApp, keyring: Keyring) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not self.keyring.enabled:
            # Nobody signs in, so no cookie marks a form as the dashboard's: without
            # this, any page an operator opens could post the dashboard's forms.
            if is_ui(path) and scope["method"] not in SAFE_METHODS:
                try:
                    check_same_origin(scope["headers"])
                except CsjdError as exc:
                    await problems.error_response(exc, path)(scope, receive, send)
                    return
            await self.app(scope, receive, send)
            return
        authorization = [value for name, value in scope["headers"] if name == b"authorization"]
        cookie = None
        if is_ui(path) and not authorization:
            # The cookie is HttpOnly and SameSite=Strict: a browser never sends it
            # with a form another site posts. "Site" is wider than origin, though
            # (another port, a sibling subdomain), so a form the cookie would
            # carry must also come from the dashboard's own origin, as the
            # browser says it (Sec-Fetch-Site, or Origin): no CSRF token needed.
            cookie = ui_cookie_token(scope["headers"])
            if cookie is not None:
                authorization = [b"Bearer " + cookie.encode()]
        try:
            if cookie is not None and scope["method"] not in SAFE_METHODS:
                check_same_origin(scope["headers"])
            scope[SCOPE_KEY] = caller_for(self.keyring, authorization, path)
        except CsjdError as exc:
            if is_ui(path) and scope["method"] in ("GET", "HEAD"):
                login = RedirectResponse(UI_LOGIN_PATH, status_code=303)
                if cookie is not None:  # a key since removed, or a cookie not ours
                    login.delete_cookie(UI_COOKIE, path=UI_PATH, httponly=True, samesite="strict")
                await login(scope, receive, send)
                return
            await problems.error_response(exc, path)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the bearer scheme on every operation that needs a key."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "An API key from CSJD_API_KEYS or CSJD_API_KEYS_FILE; "
            "not needed while the gateway runs without keys"
        ),
    }
    for path, operations in schema.get("paths", {}).items():
        needed = required_role(path)
        if needed is None:
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", _problem("No, or an unknown, API key"))
            if needed is KeyRole.ADMIN:
                responses.setdefault("403", _problem("The API key is not an admin key"))
    return schema
