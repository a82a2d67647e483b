"""Job states and the transitions between them: the diagram of the contract.

::

    scheduled ──due──▶ queued ──claimed──▶ running ──2xx──▶ succeeded
                         ▲                    │
                         └──── retrying ◀─────┤ retryable, throttled, interrupted
                                              ├─ permanent / used up ──▶ failed
       cancel (any non-terminal state) ───────┴──────────────────────▶ cancelled

A drain interrupts a running attempt without counting it and puts the job
straight back to ``queued``; an operator's retry puts a finished job (``failed``,
``cancelled``, or ``succeeded``: send it again) back to ``queued``, its
history kept. Nothing else moves a job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from app.core.errors import Conflict, CsjdError

if TYPE_CHECKING:
    from app.core.target import TargetSpec


class JobState(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE: frozenset[JobState] = frozenset(set(JobState) - TERMINAL)
#: States a job waits in until its ``next_attempt_at`` comes.
WAITING: frozenset[JobState] = frozenset({JobState.SCHEDULED, JobState.RETRYING})


class FailureReason(StrEnum):
    PERMANENT_STATUS = "permanent_status"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    EXPIRED = "expired"
    TARGET_GONE = "target_gone"


class Event(StrEnum):
    DUE = "due"
    CLAIMED = "claimed"
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    REQUEUE = "requeue"
    FAILED = "failed"
    CANCEL = "cancel"
    OPERATOR_RETRY = "operator_retry"


class IllegalTransition(Conflict):
    slug = "illegal-transition"
    title = "The job cannot make this transition"

    @classmethod
    def of(cls, state: JobState, verb: str) -> IllegalTransition:
        """An operator's command a job in ``state`` cannot take (``verb``: "cancelled")."""
        return cls(f"a {state.value} job cannot be {verb}", extensions={"state": state.value})


_TRANSITIONS: dict[tuple[JobState, Event], JobState] = {
    (JobState.SCHEDULED, Event.DUE): JobState.QUEUED,
    (JobState.RETRYING, Event.DUE): JobState.QUEUED,
    (JobState.QUEUED, Event.CLAIMED): JobState.RUNNING,
    (JobState.RUNNING, Event.SUCCEEDED): JobState.SUCCEEDED,
    (JobState.RUNNING, Event.RETRY): JobState.RETRYING,
    (JobState.RUNNING, Event.REQUEUE): JobState.QUEUED,
    (JobState.RUNNING, Event.FAILED): JobState.FAILED,
    # A job that expires while it waits fails without another attempt.
    (JobState.SCHEDULED, Event.FAILED): JobState.FAILED,
    (JobState.QUEUED, Event.FAILED): JobState.FAILED,
    (JobState.RETRYING, Event.FAILED): JobState.FAILED,
    (JobState.FAILED, Event.OPERATOR_RETRY): JobState.QUEUED,
    (JobState.CANCELLED, Event.OPERATOR_RETRY): JobState.QUEUED,
    # sent again on request: its attempts are kept and their numbers go on
    (JobState.SUCCEEDED, Event.OPERATOR_RETRY): JobState.QUEUED,
    **{(state, Event.CANCEL): JobState.CANCELLED for state in ACTIVE},
}


#: The states an operator's retry takes a job from.
RETRIABLE: frozenset[JobState] = frozenset(
    state for state, event in _TRANSITIONS if event is Event.OPERATOR_RETRY
)


def transition(state: JobState, event: Event) -> JobState:
    """The state after ``event``, or ``IllegalTransition`` if the diagram forbids it."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(
            f"a {state.value} job cannot take '{event.value}'",
            extensions={"state": state.value},
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    """A producer's request for a job, as intake hands it to the store."""

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
    #: jobs of one target with one key go one at a time, in order (``ordering.py``)
    ordering_key: str | None = None
    #: the target told when this job ends (``callback.py``)
    callback_target: str | None = None
    #: this job is the callback of that job: it takes no room in the backlog bound
    #: (the job it follows already did), so an ending is never refused its callback
    callback_of: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    id: str
    caller: str
    idempotency_key: str
    target: str
    state: JobState
    attempts: int
    #: the lease token: the number of the job's current (or last) delivery
    delivery: int
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
    ordering_key: str | None = None
    callback_target: str | None = None
    #: the callback job its latest ending made
    callback_job_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Enqueued:
    job: JobRecord
    replayed: bool


def initial_state(next_attempt_at: float, created_at: float) -> JobState:
    """A new job waits ``scheduled`` until it is due, else starts ``queued``."""
    return JobState.SCHEDULED if next_attempt_at > created_at else JobState.QUEUED


def admit(job: NewJob, target: TargetSpec) -> JobRecord:
    """The job ``job`` becomes when stored for ``target``: its state, and the
    target's limits where the producer set none."""
    return JobRecord(
        id=job.id,
        caller=job.caller,
        idempotency_key=job.idempotency_key,
        target=job.target,
        state=initial_state(job.next_attempt_at, job.created_at),
        attempts=0,
        delivery=0,
        max_attempts=job.max_attempts or target.max_attempts,
        created_at=job.created_at,
        updated_at=job.created_at,
        next_attempt_at=job.next_attempt_at,
        expires_at=job.expires_at or job.created_at + target.max_retry_duration_s,
        completed_at=None,
        claimed_at=None,
        lease_expires_at=None,
        last_status_code=None,
        last_error=None,
        failure_reason=None,
        payload=job.payload,
        headers=dict(job.headers) if job.headers else None,
        ordering_key=job.ordering_key,
        callback_target=job.callback_target,
    )
