"""Request and response bodies of the HTTP API (they define ``openapi.yaml``): jobs,
batches, problems, health, and the checks every body shares.

A target's bodies are in ``target_schemas.py``; a schedule's beside its routes
(``routes/schedules.py``). What a job delivers is checked alike wherever a job
is described (``Delivered``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from app.core.errors import Unprocessable
from app.core.headers import header_problems
from app.core.idempotency import INT_RANGE
from app.core.ordering import MAX_KEY_CHARS

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
#: visible characters only: no spaces, no control characters
ORDERING_KEY_PATTERN = r"^[^\s\x00-\x1f\x7f]+$"
MAX_DELAY_S = 365 * 86400
#: the API writes times with four-digit years; a later expiry could not be shown
EXPIRES_BEFORE = datetime(9999, 1, 1, tzinfo=UTC)
MASK = "********"

StateName = Literal[
    "scheduled", "queued", "running", "retrying", "succeeded", "failed", "cancelled"
]


def check_headers(value: dict[str, str]) -> dict[str, str]:
    """``value`` if csjd may send these headers, else a ``ValueError`` saying why."""
    problems = header_problems(value)
    if problems:
        raise ValueError("; ".join(problems))
    return value


def _aware(value: datetime | None) -> datetime | None:
    """The time in UTC: one instant is one value, whatever offset it was written with."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("give a time zone (RFC 3339, e.g. 2026-01-01T00:00:00Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range in UTC") from None


def _payload_problem(value: JsonValue) -> str | None:
    """Why a parsed payload cannot be stored and delivered as the JSON it was, if it can't.

    The JSON parser reads ``NaN``, ``Infinity`` and numbers too large for a
    double (as infinity), which are not JSON and would be delivered as
    ``null``; and integers of any size, which orjson cannot write.
    """
    low, high = INT_RANGE
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "numbers must be finite (NaN and Infinity are not JSON)"
        elif isinstance(item, int) and not low <= item <= high:
            return "integers must lie between -2^63 and 2^64-1"
    return None


class Delivered(BaseModel):
    """A body that describes what jobs deliver (``payload``, ``headers``): the checks
    both get wherever a job is described (``POST /jobs``, a schedule's jobs)."""

    @field_validator("payload", check_fields=False)
    @classmethod
    def _payload(cls, value: JsonValue) -> JsonValue:
        problem = _payload_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("headers", check_fields=False)
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)


class JobIn(Delivered):
    """A job to deliver (``POST /jobs``)."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(pattern=NAME_PATTERN, description="A registered target's name")
    payload: JsonValue = Field(
        description="Any JSON value (finite numbers, integers within 64 bits); "
        "delivered as compact JSON"
    )
    delay_s: float = Field(default=0, ge=0, le=MAX_DELAY_S)
    run_at: datetime | None = Field(default=None, description="RFC 3339; instead of delay_s")
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    expires_at: datetime | None = Field(
        default=None, description="RFC 3339; before 9999-01-01T00:00:00Z"
    )
    headers: dict[str, str] = Field(default_factory=dict)
    ordering_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_KEY_CHARS,
        pattern=ORDERING_KEY_PATTERN,
        description=(
            "Jobs with the same target and ordering key are delivered one at a time, in the "
            "order accepted: the next is sent once the one before it has finished "
            "(succeeded, failed or cancelled). 1-200 visible characters"
        ),
    )
    callback_target: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description=(
            "A registered target told each time this job ends: a job to it, with payload "
            '{"type": "job.succeeded" | "job.failed" | "job.cancelled", "job": <the job as '
            "GET /jobs/{id} returns it>}, stored in the same commit as the ending"
        ),
    )

    @field_validator("delay_s")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("delay_s must be a finite number")
        return value

    @field_validator("run_at", "expires_at")
    @classmethod
    def _tz(cls, value: datetime | None) -> datetime | None:
        return _aware(value)

    @model_validator(mode="after")
    def _schedule(self) -> JobIn:
        if self.run_at is not None and self.delay_s:
            raise ValueError("give delay_s or run_at, not both")
        if self.expires_at is not None and self.expires_at >= EXPIRES_BEFORE:
            raise ValueError("expires_at must be before 9999-01-01T00:00:00Z")
        return self

    def refusal(self, now: float) -> Unprocessable | None:
        """Why this body may not make a new job at ``now``, if it may not.

        Checks that depend on the time are not validation: a repeated request
        gets its stored job even when the same body would now be refused, so
        the store weighs this only for a key it has not seen."""
        if self.run_at is not None and self.run_at.timestamp() > now + MAX_DELAY_S:
            return _field_refusal("run_at", "run_at is more than a year away")
        if self.expires_at is not None and self.expires_at.timestamp() <= now:
            return _field_refusal("expires_at", "expires_at is in the past")
        return None


def _field_refusal(field: str, message: str) -> Unprocessable:
    return Unprocessable(
        f"{field}: {message}",
        extensions={"errors": [{"loc": ["body", field], "msg": message, "type": "value_error"}]},
    )


FailureReasonName = Literal["permanent_status", "attempts_exhausted", "expired", "target_gone"]
HeldByName = Literal["breaker", "pause", "disabled", "rate", "schedule", "ordering"]


class JobOut(BaseModel):
    id: str
    idempotency_key: str
    caller: str | None = Field(
        description="The API key's name the job was sent with; null while auth was off"
    )
    target: str
    state: StateName
    attempts: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    expires_at: datetime
    completed_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    failure_reason: FailureReasonName | None
    held_by: HeldByName | None = Field(
        description=(
            "Why a job not finished is not being sent now: its target's breaker is open "
            "(or probing), its target is paused (429/Retry-After) or disabled, its target's "
            "rate limit has no token now, or its time (run_at, delay, backoff) has not come, "
            "or a job before it with its ordering key has not finished; "
            "null when nothing holds it, or it runs or has finished"
        )
    )
    held_until: datetime | None = Field(description="When the hold ends, when known")
    ordering_key: str | None = Field(description="Its line: see POST /jobs")
    callback_target: str | None = Field(description="Told when it ends: see POST /jobs")
    callback_job_id: str | None = Field(description="The callback job its latest ending made")


class JobDetailOut(JobOut):
    """``GET /jobs/{id}``: the job with what it delivers."""

    payload: JsonValue = Field(description="The payload, as it is delivered")
    headers: dict[str, str] = Field(description="The job's own headers, added to its deliveries")


class JobPageOut(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class JobCountOut(BaseModel):
    count: int


class AttemptOut(BaseModel):
    n: int
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    status_code: int | None
    outcome: Literal["success", "retryable", "permanent", "throttled", "interrupted"]
    error: str | None
    response_excerpt: str | None
    content_type: str | None = Field(description="The answer's Content-Type, as sent")
    response_bytes: int | None = Field(
        description="The answer's length: its Content-Length, else the bytes read"
    )


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


#: the most jobs one ``POST /jobs/batch`` may carry
MAX_BATCH_JOBS = 1000


class BatchJobIn(JobIn):
    """One job of a batch: the body of ``POST /jobs``, with its own key."""

    idempotency_key: str = Field(
        min_length=1,
        max_length=257,
        description='As the Idempotency-Key header: 1 to 255 visible ASCII characters; "quoted" '
        "and bare forms are one key",
    )


class BatchIn(BaseModel):
    """Jobs to accept in one request (``POST /jobs/batch``); each is answered on its own."""

    # documents the body only: the route takes each item apart itself, so that a
    # bad item is refused alone (app/api/batch.py)
    model_config = ConfigDict(extra="forbid")

    jobs: list[BatchJobIn] = Field(min_length=1, max_length=MAX_BATCH_JOBS)


class BatchResultOut(BaseModel):
    """One item's answer: ``status`` 202 with the job, or a 4xx with its problem, as
    ``POST /jobs`` would answer that item alone."""

    status: int
    job: JobOut | None = None
    replayed: bool | None = Field(
        None, description="The key had already made this job (Idempotent-Replayed)"
    )
    problem: Problem | None = None


class BatchOut(BaseModel):
    results: list[BatchResultOut] = Field(description="One per job sent, in order")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
