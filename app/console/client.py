"""The gateway's HTTP API as the operator commands use it, over a sync httpx client.

``Api`` knows the paths, sends the bearer token, and turns every answer into
parsed JSON or an exception; it knows nothing about terminals or exit codes
beyond naming them on the errors, which ``app.console.actions`` prints. The
errors form one small tree::

    ConsoleError            exit_code
    ├── UsageError          2: the command line, or a file it names, is wrong
    ├── Unreachable         3: no answer from the gateway (refused, DNS, timeout)
    └── ApiError            1: the gateway answered 4xx/5xx; carries the Problem
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass, field
from json import dumps
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from app import __version__

JsonObject = dict[str, Any]

#: the largest page of attempts the gateway gives out
ATTEMPTS_PAGE = 1000


class ConsoleError(Exception):
    exit_code = 1


class UsageError(ConsoleError):
    exit_code = 2


class Unreachable(ConsoleError):
    """No answer: the message names the address and what failed, in words (never
    an httpx or socket class), and where the address came from."""

    exit_code = 3

    def __init__(self, base_url: str, cause: httpx.TransportError, timeout_s: float) -> None:
        if isinstance(cause, httpx.ConnectTimeout):
            what = f"cannot connect to {base_url} (no connection within {timeout_s:g} s)"
        elif isinstance(cause, httpx.TimeoutException):
            what = f"no answer from {base_url} within {timeout_s:g} s"
        elif isinstance(cause, httpx.ConnectError):
            what = f"cannot connect to {base_url} ({failure(cause)})"
        else:
            what = f"lost the connection to {base_url} ({failure(cause)})"
        super().__init__(f"{what}; is it running, and is CSJD_URL (or --url) its address?")


#: what an OS error number means to someone running a command
_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection reset",
    errno.EPIPE: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EADDRNOTAVAIL: "address not available",
    errno.ETIMEDOUT: "timed out",
}
#: the same, recognised in the text of an error that carries no cause (a test's fake)
_TEXT_WORDS = (
    ("connection refused", "connection refused"),
    ("connection reset", "connection reset"),
    ("name or service not known", "DNS lookup failed"),
    ("temporary failure in name resolution", "DNS lookup failed"),
    ("nodename nor servname", "DNS lookup failed"),
    ("no route to host", "host unreachable"),
    ("network is unreachable", "network unreachable"),
    ("certificate verify failed", "TLS certificate not trusted"),
    ("disconnected without sending a response", "closed without an answer"),
)


def failure(exc: BaseException) -> str:
    """What went wrong with a connection, in a few plain words."""
    seen: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in seen:
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    for error in seen:
        if isinstance(error, socket.gaierror):
            return "DNS lookup failed"
        if isinstance(error, ssl.SSLCertVerificationError):
            return "TLS certificate not trusted"
        if isinstance(error, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(error, OSError) and error.errno in _ERRNO_WORDS:
            return _ERRNO_WORDS[error.errno]
    text = " ".join(str(error) for error in seen).lower()
    for needle, words in _TEXT_WORDS:
        if needle in text:
            return words
    for error in seen:
        if isinstance(error, OSError) and error.strerror:
            return error.strerror.lower()
    if isinstance(exc, httpx.RemoteProtocolError | httpx.LocalProtocolError):
        return "invalid HTTP answer"
    return "connection failed"


@dataclass(frozen=True, slots=True)
class Problem:
    """An RFC 9457 answer, or what could be made of a 4xx/5xx that was not one."""

    status: int
    title: str
    detail: str = ""
    type: str = "about:blank"
    errors: list[JsonObject] = field(default_factory=list)
    body: JsonObject = field(default_factory=dict)

    @classmethod
    def from_response(cls, response: httpx.Response) -> Problem:
        reason = response.reason_phrase or f"HTTP {response.status_code}"
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = response.text.strip()
            return cls(status=response.status_code, title=reason, detail=text[:200])
        errors = body.get("errors")
        return cls(
            status=response.status_code,
            title=str(body.get("title") or reason),
            detail=str(body.get("detail") or ""),
            type=str(body.get("type") or "about:blank"),
            errors=[e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else [],
            body=body,
        )

    def as_json(self) -> JsonObject:
        return self.body or {"status": self.status, "title": self.title, "detail": self.detail}


class ApiError(ConsoleError):
    exit_code = 1

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(f"{problem.title}: {problem.detail}" if problem.detail else problem.title)


def segment(value: str, what: str) -> str:
    """``value`` as one path segment; '.' and '..' would be folded away by URL rules."""
    if value in {"", ".", ".."}:
        raise UsageError(f"{what} {value!r} is not valid")
    return quote(value, safe="")


def check_base_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UsageError(f"CSJD_URL (or --url) {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise UsageError(
            f"CSJD_URL (or --url) {url!r} must be an http:// or https:// address, "
            "for example http://127.0.0.1:8080"
        )
    return url.rstrip("/")


class Api:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.timeout_s = timeout_s
        self.token_sent = bool(token)
        headers = {"User-Agent": f"csjd-cli/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout_s,
            follow_redirects=False,
            transport=transport,
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.close()

    # -- targets -------------------------------------------------------------------

    def targets(self) -> list[JsonObject]:
        return self._array(self._request("GET", "/targets"))

    def target(self, name: str) -> JsonObject:
        return self._object(self._request("GET", f"/targets/{segment(name, 'target')}"))

    def put_target(self, name: str, body: JsonObject) -> tuple[JsonObject, bool]:
        """The target as stored, and whether it was created (rather than replaced)."""
        response = self._request("PUT", f"/targets/{segment(name, 'target')}", json=body)
        return self._object(response), response.status_code == 201

    def patch_target(self, name: str, changes: JsonObject) -> JsonObject:
        """Change only the fields given (RFC 7396 merge patch); the target as stored."""
        response = self._request(
            "PATCH",
            f"/targets/{segment(name, 'target')}",
            content=dumps(changes).encode(),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        return self._object(response)

    def delete_target(self, name: str) -> None:
        self._request("DELETE", f"/targets/{segment(name, 'target')}")

    # -- schedules -------------------------------------------------------------------

    def schedules(self) -> list[JsonObject]:
        return self._array(self._request("GET", "/schedules"))

    def schedule(self, name: str) -> JsonObject:
        return self._object(self._request("GET", f"/schedules/{segment(name, 'schedule')}"))

    def put_schedule(self, name: str, body: JsonObject) -> tuple[JsonObject, bool]:
        """The schedule as stored, and whether it was created (rather than replaced)."""
        response = self._request("PUT", f"/schedules/{segment(name, 'schedule')}", json=body)
        return self._object(response), response.status_code == 201

    def delete_schedule(self, name: str) -> None:
        self._request("DELETE", f"/schedules/{segment(name, 'schedule')}")

    # -- jobs ------------------------------------------------------------------------

    def jobs_page(
        self, *, limit: int | None = None, cursor: str | None = None, **filters: str | None
    ) -> JsonObject:
        """A page of ``GET /jobs``; ``filters`` are its query's (``state``, ``target``,
        ``caller``, ``reason``, ``created_after``, ``created_before``), None left out."""
        params = {**filters, "limit": limit, "cursor": cursor}
        query = {k: v for k, v in params.items() if v is not None}
        return self._object(self._request("GET", "/jobs", params=query))

    def jobs_count(self, **filters: str | None) -> int:
        """How many jobs ``GET /jobs`` would list with these filters."""
        query = {k: v for k, v in filters.items() if v is not None}
        count = self._object(self._request("GET", "/jobs/count", params=query)).get("count")
        if not isinstance(count, int):
            raise ApiError(
                Problem(status=200, title="Not a csjd answer", detail="/jobs/count has no count")
            )
        return count

    def job(self, job_id: str) -> JsonObject:
        return self._object(self._request("GET", f"/jobs/{segment(job_id, 'job id')}"))

    def attempts(self, job_id: str) -> list[JsonObject]:
        """Every attempt, a page of ``ATTEMPTS_PAGE`` at a time."""
        path = f"/jobs/{segment(job_id, 'job id')}/attempts"
        found: list[JsonObject] = []
        while True:
            after = found[-1].get("n", 0) if found else 0
            page = self._array(
                self._request("GET", path, params={"after": after, "limit": ATTEMPTS_PAGE})
            )
            found += page
            if len(page) < ATTEMPTS_PAGE:
                return found

    def cancel(self, job_id: str) -> JsonObject:
        path = f"/jobs/{segment(job_id, 'job id')}/cancel"
        return self._object(self._request("POST", path))

    def retry(self, job_id: str) -> JsonObject:
        path = f"/jobs/{segment(job_id, 'job id')}/retry"
        return self._object(self._request("POST", path))

    # -- health ----------------------------------------------------------------------

    def readyz(self) -> tuple[bool, JsonObject]:
        """Whether the gateway is ready, and its checks; a 503 is an answer here."""
        response = self._request("GET", "/readyz", answers={503})
        return response.status_code == 200, self._object(response)

    # -- plumbing --------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        answers: set[int] | frozenset[int] = frozenset(),
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method, path, params=params, json=json, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, exc, self.timeout_s) from None
        if response.status_code >= 400 and response.status_code not in answers:
            raise ApiError(Problem.from_response(response))
        return response

    @staticmethod
    def _object(response: httpx.Response) -> JsonObject:
        body = Api._json(response)
        if not isinstance(body, dict):
            raise ApiError(Api._not_csjd(response, "a JSON object"))
        return body

    @staticmethod
    def _array(response: httpx.Response) -> list[JsonObject]:
        body = Api._json(response)
        if not isinstance(body, list):
            raise ApiError(Api._not_csjd(response, "a JSON array"))
        return body

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ApiError(Api._not_csjd(response, "JSON")) from None

    @staticmethod
    def _not_csjd(response: httpx.Response, expected: str) -> Problem:
        kind = response.headers.get("content-type", "no content type")
        return Problem(
            status=response.status_code,
            title="Not a csjd answer",
            detail=f"{response.request.url.path} answered {kind}, not {expected}",
        )
