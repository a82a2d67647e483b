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

from dataclasses import dataclass, field
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
    exit_code = 3

    def __init__(self, base_url: str, cause: httpx.TransportError) -> None:
        if isinstance(cause, httpx.TimeoutException):
            what = f"no answer from the gateway at {base_url} in time ({type(cause).__name__})"
        else:
            reason = str(cause) or type(cause).__name__
            what = f"cannot reach the gateway at {base_url}: {reason}"
        super().__init__(f"{what}; is it running, and is CSJD_URL (or --url) its address?")


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

    def delete_target(self, name: str) -> None:
        self._request("DELETE", f"/targets/{segment(name, 'target')}")

    # -- jobs ------------------------------------------------------------------------

    def jobs_page(
        self,
        *,
        state: str | None = None,
        target: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JsonObject:
        params = {"state": state, "target": target, "limit": limit, "cursor": cursor}
        query = {k: v for k, v in params.items() if v is not None}
        return self._object(self._request("GET", "/jobs", params=query))

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
        answers: set[int] | frozenset[int] = frozenset(),
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, params=params, json=json)
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, exc) from None
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
