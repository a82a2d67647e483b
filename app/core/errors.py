"""The one exception tree of csjd, and how each error reads as a problem.

Every error a caller can cause is a ``CsjdError``; each subclass knows the RFC
9457 problem it becomes (``type``, ``title``, ``status``), so the HTTP edge
translates them without a lookup table::

    CsjdError
    ├── BadRequest (400)            bad cursor
    │   ├── MalformedJson
    │   └── InvalidIdempotencyKey
    ├── Unauthenticated (401)       no, or an unknown, bearer token
    ├── Forbidden (403)             the key's role does not reach the route
    ├── NotFound (404)              unknown job or target
    ├── Conflict (409)              illegal transition, target still in use
    │   └── KeyInFlight             same key while the first is being stored
    ├── PayloadTooLarge (413)
    ├── Unprocessable (422)         invalid field, unknown target, refused URL
    │   ├── IdempotencyKeyReused    same key, different request
    │   └── RefusedByDatabase       the database refuses this request's values
    ├── BacklogFull (429)           storing would exceed CSJD_MAX_BACKLOG
    └── Unavailable (503)           draining
        └── DatabaseUnavailable     unreachable, restarting, or busy past the retries
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://csjd.dev/problems/"


class CsjdError(Exception):
    """Base of every error csjd reports to a caller."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        retry_after_s: int | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.extensions = extensions or {}

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the problem needs besides ``Retry-After``."""
        return {}


class BadRequest(CsjdError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class MalformedJson(BadRequest):
    slug = "malformed-json"
    title = "Malformed JSON"


class InvalidIdempotencyKey(BadRequest):
    slug = "invalid-idempotency-key"
    title = "Missing or malformed Idempotency-Key"


class Unauthenticated(CsjdError):
    status = 401
    slug = "unauthenticated"
    title = "Unauthenticated"

    def __init__(self, detail: str, *, token_given: bool) -> None:
        super().__init__(detail)
        self.token_given = token_given

    @property
    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="csjd"'
        if self.token_given:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


class Forbidden(CsjdError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(CsjdError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(CsjdError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class KeyInFlight(Conflict):
    slug = "idempotency-key-in-flight"
    title = "A request with this Idempotency-Key is still being stored"


class PayloadTooLarge(CsjdError):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class Unprocessable(CsjdError):
    status = 422
    slug = "validation"
    title = "Invalid request"


class UnknownTarget(Unprocessable):
    slug = "unknown-target"
    title = "Unknown target"


class RefusedUrl(Unprocessable):
    slug = "refused-url"
    title = "Target URL refused"


class IdempotencyKeyReused(Unprocessable):
    slug = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"


class RefusedByDatabase(Unprocessable):
    slug = "refused-by-database"
    title = "The database refused this request's values"


class BacklogFull(CsjdError):
    status = 429
    slug = "backlog-full"
    title = "Backlog full"

    @classmethod
    def at(cls, max_backlog: int) -> BacklogFull:
        """Storing one more would take the backlog past ``max_backlog``."""
        return cls(
            f"the backlog holds its maximum of {max_backlog} unfinished jobs", retry_after_s=5
        )


class Unavailable(CsjdError):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"


class DatabaseUnavailable(Unavailable):
    slug = "database-unavailable"
    title = "Database unavailable"

    def __init__(self, detail: str | None = None, *, retry_after_s: int = 2) -> None:
        super().__init__(
            detail
            or "the database cannot be reached now; try again (sending a job again "
            "with the same Idempotency-Key is safe)",
            retry_after_s=retry_after_s,
        )
