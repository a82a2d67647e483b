"""Checks on a request body before anything reads it: size and media type.

``check_body`` and ``read_body`` are the rule, shared by ``RequestGuard`` (the middleware in
front of every FastAPI route) and the intake lane (``intake.py``), which
answers ``POST /jobs`` ahead of the middleware. Bodies over ``max_bytes`` get
``413``, whether declared by ``Content-Length`` or streamed. A body sent
without a content type is read as JSON (what ``curl -d`` users mean); any
other non-JSON type gets ``415``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api import problems

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: media types that ``curl -d`` and friends send by default for what is meant as JSON
_READ_AS_JSON = (b"", b"application/x-www-form-urlencoded")


class BodyProblem(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def response(self, instance: str | None) -> Response:
        return problems.problem(self.status, detail=self.detail, instance=instance)


def too_large(max_bytes: int) -> BodyProblem:
    return BodyProblem(413, f"the request body is larger than {max_bytes} bytes")


def declared_length(value: bytes | None) -> int:
    try:
        return int(value or b"0")
    except ValueError:
        return 0


def check_body(content_type: bytes | None, declared: int, max_bytes: int) -> bool:
    """Raise ``BodyProblem`` for a body that must be refused before it is read;
    True when a body with no (or a form) content type is to be read as JSON."""
    if declared > max_bytes:
        raise too_large(max_bytes)
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    if media in _READ_AS_JSON:
        return bool(declared)
    if media != b"application/json" and not media.endswith(b"+json"):
        raise BodyProblem(415, "send the body as application/json")
    return False


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    """The whole request body; ``BodyProblem`` 413 as soon as it outgrows ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; what arrived is all there is
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > max_bytes:
                raise too_large(max_bytes)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class RequestGuard:
    """``check_body`` for every ``POST``/``PUT``/``PATCH`` reaching FastAPI."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        declared = declared_length(headers.get(b"content-length"))
        try:
            as_json = check_body(headers.get(b"content-type"), declared, self.max_bytes)
        except BodyProblem as exc:
            await exc.response(scope.get("path"))(scope, receive, send)
            return
        if as_json:
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"] + [
                (b"content-type", b"application/json")
            ]
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exc = too_large(self.max_bytes)
                    raise StarletteHTTPException(exc.status, detail=exc.detail)
            return message

        await self.app(scope, limited, send)
