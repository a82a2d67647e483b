"""Checks on a request body before anything parses it: size, media type, nesting.

``check_body`` and ``read_body`` are the rule, shared by ``RequestGuard`` (the middleware in
front of every FastAPI route) and the intake lane (``intake.py``), which
answers ``POST /jobs`` ahead of the middleware. Bodies over ``max_bytes`` get
``413``, whether declared by ``Content-Length`` or streamed. A body sent
without a content type is read as JSON (what ``curl -d`` users mean); any
other non-JSON type gets ``415``. A ``PATCH`` body is a JSON merge patch
(RFC 7396): it must be sent as ``application/merge-patch+json`` (or without a
type, read as one), else ``415`` with ``Accept-Patch``. JSON nested deeper than ``MAX_JSON_DEPTH``
gets ``422``, and a body whose client went away before sending all of it is
never parsed, so what arrived of it can never be stored. Limits on the request
line, the headers and slow clients belong to the HTTP protocol
(``http_limits.py``), which answers before a request reaches the app.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from itertools import accumulate
from typing import Any

from starlette.responses import Response

from app.api import problems
from app.core.errors import PROBLEM_BASE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: media types that ``curl -d`` and friends send by default for what is meant as JSON
_READ_AS_JSON = (b"", b"application/x-www-form-urlencoded")
JSON = b"application/json"
#: the one patch format csjd's ``PATCH`` routes take (RFC 7396)
MERGE_PATCH = b"application/merge-patch+json"

#: Arrays and objects nested deeper than this are refused with ``422`` before
#: any parser sees them: nothing csjd stores needs more, and deep nesting costs
#: every later reader (the fingerprint, the dispatcher, the receiving webhook).
MAX_JSON_DEPTH = 32

#: a JSON string, escapes included; brackets inside one nest nothing. The closing
#: quote is optional, so a string left open runs to the end in one pass (were it
#: required, every later quote would start the search again: quadratic in the
#: body's size, minutes of a blocked event loop for 256 KiB)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
#: an opening bracket becomes a step in (1), a closing one a step out (-1 as a
#: signed byte); every other byte is dropped
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


class BodyProblem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        extensions: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title
        self.extensions = extensions
        self.headers = headers

    def body(self, instance: str | None) -> dict[str, Any]:
        """The problem as JSON (a batch item's answer; no headers)."""
        return problems.problem_body(
            self.status,
            detail=self.detail,
            title=self.title,
            type_=PROBLEM_BASE + self.slug if self.slug else None,
            instance=instance,
            extensions=self.extensions,
        )

    def response(self, instance: str | None) -> Response:
        return problems.problem(
            self.status,
            detail=self.detail,
            title=self.title,
            type_=PROBLEM_BASE + self.slug if self.slug else None,
            instance=instance,
            extensions=self.extensions,
            headers=self.headers,
        )


def too_large(max_bytes: int) -> BodyProblem:
    return BodyProblem(413, f"the request body is larger than {max_bytes} bytes")


def too_deep(max_depth: int) -> BodyProblem:
    # 422, not 400: the body is JSON, it breaks a rule of the contract (like a
    # field out of range), and 400 stays the answer for "this is not JSON"
    detail = f"the JSON body is nested deeper than {max_depth} levels of arrays and objects"
    return BodyProblem(
        422,
        detail,
        slug="json-too-deep",
        title="JSON nested too deeply",
        extensions={
            "max_depth": max_depth,
            "errors": [{"loc": ["body"], "msg": detail, "type": "json_too_deep"}],
        },
    )


def cut_short() -> BodyProblem:
    # nobody reads this answer (the client is gone); it keeps a partial body
    # that happens to be valid JSON from being taken for the whole request
    return BodyProblem(400, "the client went away before sending the whole body")


def nested_deeper_than(body: bytes, max_depth: int) -> bool:
    """Whether ``body`` holds arrays or objects nested deeper than ``max_depth``.

    Cheap where it matters: a body with no more brackets than ``max_depth``
    cannot be that deep, and that is two ``bytes.count`` calls (a job body is a
    few hundred bytes). Otherwise strings are cut out, the brackets left become
    steps in and out, and the deepest running sum is the depth, all in C and in
    one pass each. Brackets opened and never closed count too: a parser would
    have gone that deep before finding out.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    steps = _STRING.sub(b"", body).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(memoryview(steps).cast("b")), default=0) > max_depth


def declared_length(value: bytes | None) -> int:
    try:
        return int(value or b"0")
    except ValueError:
        return 0


def check_body(
    content_type: bytes | None, declared: int, max_bytes: int, *, only: bytes | None = None
) -> bool:
    """Raise ``BodyProblem`` for a body that must be refused before it is read;
    True when a body with no (or a form) content type is to be read as JSON.
    ``only``: the one media type taken (a ``PATCH``'s), instead of any JSON."""
    if declared > max_bytes:
        raise too_large(max_bytes)
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    if media in _READ_AS_JSON:
        return bool(declared)
    if only is not None:
        if media != only:
            wanted = only.decode()
            raise BodyProblem(
                415, f"send the patch as {wanted} (RFC 7396)", headers={"Accept-Patch": wanted}
            )
    elif media != JSON and not media.endswith(b"+json"):
        raise BodyProblem(415, "send the body as application/json")
    return False


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    """The whole request body; ``BodyProblem`` 413 as soon as it outgrows ``max_bytes``,
    422 when it is nested deeper than ``MAX_JSON_DEPTH``, 400 when the client left."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise cut_short()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > max_bytes:
                raise too_large(max_bytes)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if nested_deeper_than(body, MAX_JSON_DEPTH):
        raise too_deep(MAX_JSON_DEPTH)
    return body


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` (already read) and then listens as before."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class RequestGuard:
    """``check_body`` and ``read_body`` for every ``POST``/``PUT``/``PATCH`` reaching FastAPI.

    The body is read here, whole (it is bounded by ``max_bytes``, or by the
    path's own entry in ``limits``, and FastAPI
    would buffer it anyway), so that a refused one never reaches a route; the
    route then reads it again from memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: paths whose bodies have a limit of their own (``POST /jobs/batch``)
        self.limits = limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        declared = declared_length(headers.get(b"content-length"))
        # a request without a body (a cancel, a retry) has no media type to judge
        has_body = declared > 0 or b"transfer-encoding" in headers
        only = MERGE_PATCH if scope["method"] == "PATCH" else None
        max_bytes = self.limits.get(scope["path"], self.max_bytes)
        try:
            as_json = has_body and check_body(
                headers.get(b"content-type"), declared, max_bytes, only=only
            )
            body = await read_body(receive, max_bytes)
        except BodyProblem as exc:
            await exc.response(scope.get("path"))(scope, receive, send)
            return
        if as_json:
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"] + [
                (b"content-type", only or JSON)
            ]
        await self.app(scope, replay(body, receive), send)
