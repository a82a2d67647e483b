"""Why a job that is not finished is not being sent now: the hold the API shows.

``hold_of`` decides it from the job, its target as stored (disabled, paused
after ``429``/``Retry-After``) and what the dispatcher alone knows (the
breaker, the rate limiter's next token), at ``now``. A running or finished
job is not held, and one waiting behind the head of its ordering key's line
is held by that line (``ordering.py``). A disabled target holds its jobs with no end in sight;
otherwise, of the holds that apply (the job's own schedule or backoff, the
target's pause, an open or probing breaker, an empty rate bucket) the one
that lasts longest is the answer, since the job goes no earlier than that.
Pure: no I/O, and the caller passes what it has (no target, no live view,
when it has none at hand).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from app.core.job import WAITING, JobRecord, JobState
from app.core.ordering import is_behind
from app.core.target import TargetRecord

#: breaker states that hold a target's jobs (``app.core.breaker.BreakerState`` values)
_OPEN = "open"
_HALF_OPEN = "half_open"
#: the states of a job waiting to be sent: the only ones a hold applies to
UNSENT = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.RETRYING})


class HeldBy(StrEnum):
    BREAKER = "breaker"
    PAUSE = "pause"
    DISABLED = "disabled"
    RATE = "rate"
    SCHEDULE = "schedule"
    ORDERING = "ordering"


@dataclass(frozen=True, slots=True)
class Hold:
    """What holds a job back (None: nothing), and until when (None: not known)."""

    by: HeldBy | None = None
    until: float | None = None


NOT_HELD = Hold()


class LiveView(Protocol):
    """What the dispatcher says of a target right now (``LiveState`` in
    ``app/dispatch/loop.py`` is one)."""

    @property
    def breaker(self) -> str: ...
    @property
    def breaker_reopens_at(self) -> float | None: ...
    @property
    def rate_free_at(self) -> float | None: ...


def hold_of(job: JobRecord, target: TargetRecord | None, live: LiveView | None, now: float) -> Hold:
    """Why ``job`` is not being sent at ``now``; ``NOT_HELD`` when nothing holds it."""
    if job.state not in UNSENT:
        return NOT_HELD
    if is_behind(job):
        # behind the head of its line: it goes when every job before it has finished
        return Hold(HeldBy.ORDERING)
    if target is not None and not target.spec.enabled:
        return Hold(HeldBy.DISABLED)
    holds: list[Hold] = []
    # In this order, so that of holds ending together the target's is named: a
    # throttled job waits for its target's pause, and its own retry is set to it.
    if target is not None and target.paused_until is not None and target.paused_until > now:
        holds.append(Hold(HeldBy.PAUSE, target.paused_until))
    if live is not None:
        if live.breaker == _OPEN:
            holds.append(Hold(HeldBy.BREAKER, live.breaker_reopens_at))
        elif live.breaker == _HALF_OPEN:
            # its one probe is out (or about to be): the rest wait for its answer
            holds.append(Hold(HeldBy.BREAKER, None))
        if live.rate_free_at is not None and live.rate_free_at > now:
            holds.append(Hold(HeldBy.RATE, live.rate_free_at))
    due = job.next_attempt_at
    if job.state in WAITING and due is not None and due > now:
        holds.append(Hold(HeldBy.SCHEDULE, due))
    if not holds:
        return NOT_HELD
    # an end not known counts as now: a known later end binds longer
    return max(holds, key=lambda h: now if h.until is None else h.until)
