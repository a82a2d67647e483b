"""Request and response bodies of the HTTP API (they define ``openapi.yaml``).

A target's fields are declared once for the API, in ``TargetIn`` (with their
limits, defaults and descriptions); ``TargetOut``, ``TargetPatch`` and the
conversion to the core's ``TargetSpec`` are derived from it and ``SPEC_FIELDS``."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from app.core.errors import Unprocessable
from app.core.headers import header_problems
from app.core.idempotency import INT_RANGE
from app.core.signing import decode_secrets
from app.core.target import SPEC_FIELDS, TargetSpec

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
MAX_DELAY_S = 365 * 86400
#: the API writes times with four-digit years; a later expiry could not be shown
EXPIRES_BEFORE = datetime(9999, 1, 1, tzinfo=UTC)
MASK = "********"

StateName = Literal[
    "scheduled", "queued", "running", "retrying", "succeeded", "failed", "cancelled"
]


def _check_headers(value: dict[str, str]) -> dict[str, str]:
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


class TargetIn(BaseModel):
    """A webhook target's configuration (``PUT /targets/{name}``)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="Optional; must equal the path's name")
    url: str = Field(max_length=2048, description="http or https URL the jobs are POSTed to")
    timeout_s: float = Field(default=10.0, ge=0.1, le=300)
    max_concurrency: int = Field(default=16, ge=1, le=10_000)
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=1_000_000)
    max_attempts: int = Field(default=10, ge=1, le=1000)
    backoff_initial_s: float = Field(default=1.0, gt=0, le=86400)
    backoff_max_s: float = Field(default=600.0, gt=0, le=7 * 86400)
    max_retry_duration_s: float = Field(default=86400.0, gt=0, le=30 * 86400)
    secret: str | None = Field(
        default=None,
        max_length=512,
        description=(
            "whsec_… (base64, ≥ 24 bytes); several separated by spaces while rotating, "
            "each signing every delivery; write-only"
        ),
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Static headers added to each delivery; write-only"
    )
    enabled: bool = True

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None:
            decode_secrets(value)
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_headers(value)

    @model_validator(mode="after")
    def _backoff(self) -> TargetIn:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self

    def to_spec(self, name: str) -> TargetSpec:
        """This body as the target ``name`` (the path's, or the targets file's)."""
        if self.name is not None and self.name != name:
            raise Unprocessable(
                f"the body names target '{self.name}' but the path names '{name}'",
                extensions={
                    "errors": [
                        {
                            "loc": ["body", "name"],
                            "msg": "must equal the path's name",
                            "type": "value_error",
                        }
                    ]
                },
            )
        fields = {field: getattr(self, field) for field in SPEC_FIELDS}
        fields["headers"] = dict(self.headers)  # the spec's own, not the body's
        return TargetSpec(name=name, **fields)


class TargetState(BaseModel):
    breaker: Literal["closed", "open", "half_open"]
    breaker_reopens_at: datetime | None = Field(
        description=(
            "Set while the breaker is open, and only then: when it half-opens and lets "
            "the next probe attempt through (the next probe, if a job is due then)"
        )
    )
    paused_until: datetime | None
    concurrency_limit: int
    inflight: int
    backlog: dict[str, int]
    disabled_reason: str | None


#: what the API shows of a write-only field instead of its value
_MASKED = {
    "secret": f"'{MASK}' when a secret is set",
    "headers": f"names only; values read '{MASK}'",
}


def _target_out_fields() -> dict[str, Any]:
    """``TargetOut``'s fields: every field of ``TargetSpec`` typed as ``TargetIn``
    types it (an answer has neither the input's limits nor its defaults), then
    what csjd keeps beside the spec."""
    fields: dict[str, Any] = {"name": (str, ...)}
    for name in SPEC_FIELDS:
        annotation = TargetIn.model_fields[name].annotation
        fields[name] = (annotation, Field(description=_MASKED.get(name)))
    fields |= {
        "created_at": (datetime, ...),
        "updated_at": (datetime, ...),
        "state": (TargetState, ...),
    }
    return fields


TargetOut = create_model("TargetOut", **_target_out_fields())


def _no_defaults(schema: dict[str, Any]) -> None:
    # a member left out of a patch is left alone; it does not default to null
    for member in schema.get("properties", {}).values():
        member.pop("default", None)


class _PatchBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_defaults)

    @field_validator("headers", check_fields=False)
    @classmethod
    def _patch_headers(cls, value: dict[str, str | None] | None) -> dict[str, str | None] | None:
        if value is not None:
            _check_headers({name: v for name, v in value.items() if v is not None})
            if len({name.lower() for name in value}) < len(value):
                raise ValueError("a header is named twice (names are case-insensitive)")
        return value

    def apply(self, current: TargetSpec) -> TargetIn:
        """``current`` with this patch merged in (RFC 7396), validated as a ``PUT`` body
        is (``pydantic.ValidationError`` if it is not one). A member set to null is
        removed, so the field takes its default (``url`` has none: refused); a
        header set to null is removed, and header names match whatever their case."""
        body: dict[str, Any] = {field: getattr(current, field) for field in SPEC_FIELDS}
        body["headers"] = dict(current.headers)
        for field in self.model_fields_set:
            value = getattr(self, field)
            if value is None:
                body.pop(field, None)
            elif field == "headers":
                body["headers"] = _merge_headers(body["headers"], value)
            else:
                body[field] = value
        return TargetIn.model_validate(body)


def _merge_headers(headers: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    merged = dict(headers)
    for name, value in patch.items():
        for same in [n for n in merged if n.lower() == name.lower()]:
            del merged[same]
        if value is not None:
            merged[name] = value
    return merged


def _target_patch_fields() -> dict[str, Any]:
    """``TargetPatch``'s fields: each of ``TargetIn``'s, with its limits and
    description, optional and nullable; a header's value may be null too."""
    fields: dict[str, Any] = {}
    for name, declared in TargetIn.model_fields.items():
        annotation: Any = dict[str, str | None] if name == "headers" else declared.annotation
        info = FieldInfo.merge_field_infos(declared, default=None)
        info.default_factory = None
        fields[name] = (annotation | None, info)
    return fields


if TYPE_CHECKING:  # its fields are read by name (``model_fields_set``), never as attributes
    TargetPatch = _PatchBase
else:
    TargetPatch = create_model(
        "TargetPatch",
        __base__=_PatchBase,
        __doc__="Changes to a target (``PATCH /targets/{name}``): a JSON merge patch (RFC 7396).",
        **_target_patch_fields(),
    )


class JobIn(BaseModel):
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

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: JsonValue) -> JsonValue:
        problem = _payload_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

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

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_headers(value)

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
HeldByName = Literal["breaker", "pause", "disabled", "rate", "schedule"]


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
            "rate limit has no token now, or its time (run_at, delay, backoff) has not come; "
            "null when nothing holds it, or it runs or has finished"
        )
    )
    held_until: datetime | None = Field(description="When the hold ends, when known")


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
