"""Job states and the transitions between them: the diagram of the contract.

::

    scheduled ──due──▶ queued ──claimed──▶ running ──2xx──▶ succeeded
                         ▲                    │
                         └──── retrying ◀─────┤ retryable, throttled, interrupted
                                              ├─ permanent / used up ──▶ failed
       cancel (any non-terminal state) ───────┴──────────────────────▶ cancelled

A drain interrupts a running attempt without counting it and puts the job
straight back to ``queued``; an operator's retry puts a ``failed`` or
``cancelled`` job back to ``queued``. Nothing else moves a job.
"""

from __future__ import annotations

from enum import StrEnum

from app.core.errors import Conflict


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
    **{(state, Event.CANCEL): JobState.CANCELLED for state in ACTIVE},
}


def transition(state: JobState, event: Event) -> JobState:
    """The state after ``event``, or ``IllegalTransition`` if the diagram forbids it."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(
            f"a {state.value} job cannot take '{event.value}'",
            extensions={"state": state.value},
        ) from None
