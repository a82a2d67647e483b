"""Every error as RFC 9457 ``application/problem+json``.

``CsjdError`` subclasses carry their own type, title and status; FastAPI's
validation errors become ``422`` with ``errors`` (or ``400`` for a body that
is not JSON at all); Starlette's ``404``/``405`` and anything unexpected get
the same shape. ``429`` and ``503`` always carry ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api.schemas import Problem
from app.core.errors import PROBLEM_BASE, CsjdError, MalformedJson

log = logging.getLogger("csjd.api")

PROBLEM_JSON = "application/problem+json"
_DEFAULT_RETRY_AFTER = {429: 5, 503: 5}
_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}
_SLUGS = {404: "not-found", 405: "method-not-allowed", 500: "internal"}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for answers that are problems.

    The body is described under ``application/problem+json``, the type it is
    sent as, so that clients and schema checks can read it. (FastAPI also lists
    the model under ``application/json``; nothing is sent as that.)
    """
    return {
        status: {
            "model": Problem,
            "description": _TITLES.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def problem_body(
    status: int,
    *,
    detail: str,
    title: str | None = None,
    type_: str | None = None,
    instance: str | None = None,
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem's JSON object, as ``problem`` sends it (and a batch's item holds it)."""
    body: dict[str, Any] = {
        "type": type_ or PROBLEM_BASE + _SLUGS.get(status, f"http-{status}"),
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    for key, value in (extensions or {}).items():
        body.setdefault(key, value)
    return body


def problem(
    status: int,
    *,
    detail: str,
    title: str | None = None,
    type_: str | None = None,
    instance: str | None = None,
    retry_after_s: int | None = None,
    extensions: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = problem_body(
        status, detail=detail, title=title, type_=type_, instance=instance, extensions=extensions
    )
    out_headers = dict(headers or {})
    if retry_after_s is None:
        retry_after_s = _DEFAULT_RETRY_AFTER.get(status)
    if retry_after_s is not None:
        out_headers["Retry-After"] = str(retry_after_s)
    return Response(
        orjson.dumps(body, default=str),
        status_code=status,
        headers=out_headers,
        media_type=PROBLEM_JSON,
    )


def error_body(error: CsjdError, instance: str | None = None) -> dict[str, Any]:
    return problem_body(
        error.status,
        detail=error.detail,
        title=error.title,
        type_=error.type,
        instance=instance,
        extensions=error.extensions,
    )


def error_response(error: CsjdError, instance: str | None = None) -> Response:
    return problem(
        error.status,
        detail=error.detail,
        title=error.title,
        type_=error.type,
        instance=instance,
        retry_after_s=error.retry_after_s,
        extensions=error.extensions,
        headers=error.headers,
    )


def validation_problem(errors: list[dict[str, Any]], instance: str | None) -> Response:
    return _problem_response(validation_body(errors, instance))


def validation_body(errors: list[dict[str, Any]], instance: str | None) -> dict[str, Any]:
    cleaned = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    first = cleaned[0] if cleaned else {"loc": [], "msg": "invalid"}
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    return problem_body(
        422,
        detail=f"{where}: {first['msg']}"
        + (f" (and {len(cleaned) - 1} more)" if len(cleaned) > 1 else ""),
        type_=PROBLEM_BASE + "validation",
        instance=instance,
        extensions={"errors": cleaned},
    )


def _problem_response(body: dict[str, Any]) -> Response:
    return Response(
        orjson.dumps(body, default=str), status_code=body["status"], media_type=PROBLEM_JSON
    )


def invalid_body(errors: list[dict[str, Any]], instance: str | None) -> Response:
    """``400`` for a body that is not JSON at all, else ``422`` listing what is wrong."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(MalformedJson("the request body is not valid JSON"), instance)
    return validation_problem(errors, instance)


def install(app: FastAPI) -> None:
    @app.exception_handler(CsjdError)
    async def _csjd(request: Request, exc: CsjdError) -> Response:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return invalid_body(list(exc.errors()), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return problem(
            exc.status_code,
            detail=detail,
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return unexpected(exc, request.url.path)


def unexpected(exc: Exception, path: str) -> Response:
    """An exception no route expected: ``500``. (A database out of reach is not
    one: the store raises ``DatabaseUnavailable``, a ``503`` like any
    ``CsjdError``, and lets no driver error out.)"""
    log.exception("unhandled_error", extra={"path": path})
    return problem(500, detail="an unexpected error occurred", instance=path)
