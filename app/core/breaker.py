"""The circuit breaker of one target, as a value and pure transitions.

A target's breaker opens after 5 consecutive failures, or when at least half
of its last 20 calls failed (once 10 were made). Open, it sends nothing; its
jobs wait without spending attempts. After the open period (30 s, doubling on
each re-open up to 10 min) it half-opens and admits exactly one probe. The
probe's success closes it (the caller then restarts the target's concurrency
at 1: slow start); its failure re-opens it for twice as long.

Only retryable outcomes (5xx, timeouts, connection errors) are failures. A
throttle leaves the breaker alone; any other answer shows the target is up.
Results of attempts that began before the breaker opened are ignored, so a
burst of stragglers cannot re-open a breaker or close it early.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

CONSECUTIVE_FAILURES = 5
WINDOW = 20
MIN_CALLS = 10
FAILURE_RATIO = 0.5
OPEN_S = 30.0
MAX_OPEN_S = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """When a breaker opens and for how long; every target's is ``DEFAULT`` (the
    numbers above), and a test may hand the dispatcher others."""

    consecutive_failures: int = CONSECUTIVE_FAILURES
    window: int = WINDOW
    min_calls: int = MIN_CALLS
    failure_ratio: float = FAILURE_RATIO
    open_s: float = OPEN_S
    max_open_s: float = MAX_OPEN_S


DEFAULT = Policy()


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: ``csjd_breaker_state`` values.
GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True, slots=True)
class Breaker:
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    #: the last calls while closed, True for a failure; newest last.
    recent: tuple[bool, ...] = ()
    open_s: float = OPEN_S
    reopens_at: float | None = None
    #: the job whose attempt is the half-open probe.
    probe: str | None = None
    #: when the breaker last opened; attempts begun before are stragglers.
    opened_at: float | None = None
    #: why it last opened, in words (for the log)
    reason: str | None = None


def current(b: Breaker, now: float) -> Breaker:
    """The breaker as time has moved it: an open breaker whose time is up half-opens."""
    if b.state is BreakerState.OPEN and b.reopens_at is not None and now >= b.reopens_at:
        return replace(b, state=BreakerState.HALF_OPEN, probe=None)
    return b


def capacity(b: Breaker, now: float) -> int | None:
    """How many attempts may start now: None for no limit, 0 or 1 otherwise."""
    b = current(b, now)
    if b.state is BreakerState.CLOSED:
        return None
    if b.state is BreakerState.HALF_OPEN and b.probe is None:
        return 1
    return 0


def start_probe(b: Breaker, job_id: str, now: float) -> Breaker:
    b = current(b, now)
    if b.state is BreakerState.HALF_OPEN and b.probe is None:
        return replace(b, probe=job_id)
    return b


def record(
    b: Breaker,
    *,
    job_id: str,
    started_at: float,
    failed: bool,
    now: float,
    policy: Policy = DEFAULT,
) -> Breaker:
    """The breaker after an attempt's result (``failed``: a retryable outcome)."""
    b = current(b, now)
    if b.state is BreakerState.HALF_OPEN:
        if b.probe != job_id:
            return b  # a straggler from before the breaker opened
        if failed:
            return _open(b, now, min(policy.max_open_s, b.open_s * 2), "the half-open probe failed")
        return Breaker()
    if b.state is BreakerState.OPEN:
        return b
    if b.opened_at is not None and started_at < b.opened_at:
        return b
    recent = (*b.recent, failed)[-policy.window :]
    consecutive = b.consecutive_failures + 1 if failed else 0
    b = replace(b, recent=recent, consecutive_failures=consecutive)
    failures = sum(recent)
    if consecutive >= policy.consecutive_failures:
        return _open(b, now, policy.open_s, f"{consecutive} consecutive failures")
    if len(recent) >= policy.min_calls and failures / len(recent) >= policy.failure_ratio:
        return _open(b, now, policy.open_s, f"{failures} of the last {len(recent)} calls failed")
    return b


def probe_lost(b: Breaker, job_id: str, now: float) -> Breaker:
    """The probe ended without a result that counts (throttled, interrupted): probe again."""
    b = current(b, now)
    if b.state is BreakerState.HALF_OPEN and b.probe == job_id:
        return replace(b, probe=None)
    return b


def _open(b: Breaker, now: float, open_s: float, reason: str) -> Breaker:
    return Breaker(
        state=BreakerState.OPEN,
        open_s=open_s,
        reopens_at=now + open_s,
        opened_at=now,
        reason=reason,
    )
