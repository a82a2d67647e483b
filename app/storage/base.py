"""The storage seam: the ``JobStore`` protocol and the records it hands out.

Records are frozen dataclasses, never ORM objects, so nothing above storage
can lazily touch the database. Every state change behind this protocol is a
compare-and-set on the row's current state (and, for a running attempt, on
its lease), so a stale or concurrent writer changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.core.errors import CsjdError
from app.core.job import FailureReason, JobState
from app.core.outcome import Outcome
from app.core.retry import Decision, Random

#: attempts in one page of ``list_attempts`` unless the caller asks for fewer
ATTEMPTS_PAGE = 100
#: the most attempts one page may hold
MAX_ATTEMPTS_PAGE = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSpec:
    """A target's configuration as an operator gives it."""

    name: str
    url: str
    timeout_s: float = 10.0
    max_concurrency: int = 16
    rate_limit_per_s: float | None = None
    max_attempts: int = 10
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 600.0
    max_retry_duration_s: float = 86400.0
    secret: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRecord:
    spec: TargetSpec
    disabled_reason: str | None
    paused_until: float | None
    created_at: float
    updated_at: float

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    id: str
    caller: str
    idempotency_key: str
    fingerprint: str
    target: str
    payload: bytes
    headers: Mapping[str, str] | None
    max_attempts: int | None
    next_attempt_at: float
    expires_at: float | None
    created_at: float
    #: why this request may not make a new job; it stands only if the key is new
    #: (a repeated request gets its stored job, whatever has changed since)
    refusal: CsjdError | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    id: str
    caller: str
    idempotency_key: str
    target: str
    state: JobState
    attempts: int
    deliveries: int
    max_attempts: int
    created_at: float
    updated_at: float
    next_attempt_at: float | None
    expires_at: float
    completed_at: float | None
    claimed_at: float | None
    lease_expires_at: float | None
    last_status_code: int | None
    last_error: str | None
    failure_reason: FailureReason | None
    payload: bytes
    headers: Mapping[str, str] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Enqueued:
    job: JobRecord
    replayed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    n: int
    started_at: float
    finished_at: float
    duration_ms: float
    status_code: int | None
    outcome: Outcome
    error: str | None
    response_excerpt: str | None
    #: the answer's ``Content-Type`` and length (``Content-Length``, else the bytes read)
    content_type: str | None = None
    response_bytes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRequest:
    """Up to ``limit`` of a target's due jobs, the longest due first."""

    target: str
    limit: int
    #: of which at most this many retries (jobs already sent: ``deliveries > 0``),
    #: so a claim takes only what the retry budget lets start; None: no bound.
    #: First attempts are never held back by retries left waiting.
    retries: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """The result of one attempt, to be written if the lease still holds."""

    job_id: str
    target: str
    #: the ``deliveries`` value the claim set: the lease token.
    lease: int
    decision: Decision
    #: None when no request was sent (the job expired before it could be).
    attempt: AttemptRecord | None
    now: float
    #: False when the claimed job goes back without a request being sent, so
    #: its request number is not used up.
    sent: bool = True
    #: a rescue's: written only if the lease still lapsed before this time
    lapsed_before: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Activity:
    """How many of a target's jobs were accepted, succeeded or failed in one time bucket."""

    target: str
    #: ``accepted``, ``succeeded`` or ``failed``
    kind: str
    #: the bucket's number, counted from the start of the window asked about
    bucket: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPage:
    items: Sequence[JobRecord]
    next_cursor: str | None


class JobStore(Protocol):
    """Durable jobs, targets and attempts, behind one seam for every backend."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    # targets
    async def put_target(self, spec: TargetSpec, now: float) -> tuple[TargetRecord, bool]: ...
    async def get_target(self, name: str) -> TargetRecord | None: ...
    async def list_targets(self) -> list[TargetRecord]: ...
    async def delete_target(self, name: str) -> None: ...
    async def backlog_by_target(self) -> dict[str, dict[str, int]]: ...

    # intake and reads
    async def enqueue(self, job: NewJob) -> Enqueued: ...
    # ``caller=None``: every caller's (the dashboard's view)
    async def get_job(self, caller: str | None, job_id: str) -> JobRecord | None: ...
    async def list_jobs(
        self,
        caller: str | None,
        *,
        state: JobState | None,
        target: str | None,
        limit: int,
        before_id: str | None,
    ) -> list[JobRecord]: ...
    # the attempts numbered above ``after``, in order, at most ``limit``; None: no such job
    async def list_attempts(
        self, caller: str, job_id: str, *, after: int = 0, limit: int = ATTEMPTS_PAGE
    ) -> list[AttemptRecord] | None: ...
    async def count_by_state(
        self, states: Collection[JobState] = tuple(JobState)
    ) -> dict[JobState, int]: ...
    async def activity(self, since: float, until: float, bucket_s: float) -> list[Activity]: ...

    # operator commands
    async def cancel(self, caller: str, job_id: str, now: float) -> JobRecord: ...
    async def retry(self, caller: str, job_id: str, now: float) -> JobRecord: ...

    # dispatch
    async def claim(
        self, requests: Sequence[ClaimRequest], now: float, lease_s: Mapping[str, float]
    ) -> list[JobRecord]: ...
    async def complete(self, completion: Completion) -> bool: ...
    async def extend_leases(self, leases: Mapping[str, int], until: float) -> int: ...
    async def try_lead(self, duty: str, holder: str, now: float, ttl_s: float) -> bool: ...
    async def fail_expired(self, now: float) -> int: ...
    async def rescue(self, now: float, rng: Random, *, expired_only: bool = False) -> int: ...
    async def next_due(self) -> float | None: ...
    async def purge(self, completed_before: float) -> int: ...
