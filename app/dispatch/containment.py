"""Per-target failure containment: what the dispatcher may send to a target now.

``TargetGuard`` holds one target's breaker, retry budget, adaptive
concurrency and rate bucket (pure values from ``app.core``) and the number of
its deliveries in flight. The dispatcher asks it how many attempts may start
(``room``) and how many of them may be retries (``retry_room``), so it claims
only what can start; it tells the guard which claimed attempts start and what
came back, and the guard moves the pure states along. Only an attempt that
starts spends a rate token, a breaker probe or the retry budget. This state
lives in the process: after a restart a breaker starts closed and the limit
at ``max_concurrency`` (pauses and disabled targets are in the database and
survive). The breaker's and the budget's thresholds are a ``Containment``
every guard is given, so a test can lower them without touching the defaults.
Every change of the breaker's state the guard sees (opened, half-open,
closed) becomes one ``BreakerEvent`` in ``events``, for the dispatcher to log:
the guard is the one place every path of the breaker passes through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core import breaker as br
from app.core import budget as bg
from app.core import limits
from app.core.outcome import Classified, Outcome
from app.core.target import TargetSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Containment:
    """The thresholds every target's breaker and retry budget follow."""

    breaker: br.Policy = br.DEFAULT
    budget: bg.Policy = bg.DEFAULT


DEFAULT = Containment()


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerEvent:
    """The breaker moved to ``breaker.state`` (as it was then: why it opened, until when)."""

    breaker: br.Breaker


@dataclass(slots=True)
class TargetGuard:
    spec: TargetSpec
    breaker: br.Breaker = field(default_factory=br.Breaker)
    budget: bg.Budget = field(default_factory=bg.Budget)
    concurrency: limits.Concurrency = field(init=False)
    bucket: limits.Bucket | None = None
    inflight: int = 0
    policy: Containment = field(default=DEFAULT, kw_only=True)
    #: breaker moves not yet taken by the dispatcher, oldest first
    events: list[BreakerEvent] = field(default_factory=list, kw_only=True)
    #: the breaker's state as last reported in ``events``
    _reported: br.BreakerState = field(default=br.BreakerState.CLOSED, init=False)

    def __post_init__(self) -> None:
        self.concurrency = limits.fresh(self.spec.max_concurrency)

    def reconfigure(self, spec: TargetSpec, now: float) -> None:
        self.spec = spec
        self.concurrency = limits.resize(self.concurrency, spec.max_concurrency)
        rate = spec.rate_limit_per_s
        if rate is None:
            self.bucket = None
        elif self.bucket is None or self.bucket.rate != rate:
            self.bucket = limits.bucket(rate, now)

    def room(self, now: float) -> int:
        """Attempts that may start now: limit, breaker and rate all agree."""
        room = self.concurrency.limit - self.inflight
        probe = br.capacity(self.breaker, now)
        if probe is not None:
            room = min(room, probe)
        if self.bucket is not None:
            room = min(room, limits.available(self.bucket, now))
        return max(0, room)

    def retry_room(self, now: float) -> int:
        """How many retries the budget lets start now (first attempts are not bounded)."""
        return bg.retries_allowed(self.budget, now, policy=self.policy.budget)

    def at_limit(self) -> bool:
        return self.inflight >= self.concurrency.limit

    def start(self, job_id: str, *, retry: bool, now: float) -> bool:
        """A claimed job's attempt starts: True, with its budget, token and probe spent.

        False for a retry over budget: nothing is spent, and the caller puts
        the job back (``hold`` while it does).
        """
        budget = self.policy.budget
        if retry:
            if bg.retries_allowed(self.budget, now, policy=budget) <= 0:
                return False
            self.budget = bg.record_retry(self.budget, now, policy=budget)
        else:
            self.budget = bg.record_first(self.budget, now, policy=budget)
        self.inflight += 1
        self.observe(now)
        self.breaker = br.start_probe(self.breaker, job_id, now)
        if self.bucket is not None:
            self.bucket = limits.take(self.bucket, 1, now)
        return True

    def hold(self) -> None:
        """A claimed job goes back unsent: it keeps a slot until it is written."""
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1

    def unclaimed(self, job_id: str, now: float) -> None:
        """A started attempt ended without sending (expired first) or without an answer."""
        self.inflight -= 1
        self.breaker = br.probe_lost(self.breaker, job_id, now)

    def finished(self, job_id: str, started_at: float, result: Classified, now: float) -> None:
        self.inflight -= 1
        # a breaker whose open time ran out half-opened before this result
        self.observe(now)
        was = br.current(self.breaker, now).state
        if result.outcome in (Outcome.RETRYABLE, Outcome.SUCCESS, Outcome.PERMANENT):
            self.breaker = br.record(
                self.breaker,
                job_id=job_id,
                started_at=started_at,
                failed=result.outcome is Outcome.RETRYABLE,
                now=now,
                policy=self.policy.breaker,
            )
        else:  # throttled or interrupted: says nothing about the target's health
            self.breaker = br.probe_lost(self.breaker, job_id, now)
        if was is br.BreakerState.HALF_OPEN and self.breaker.state is br.BreakerState.CLOSED:
            self.concurrency = limits.restart(self.concurrency)
        elif result.outcome is Outcome.THROTTLED or result.timed_out:
            self.concurrency = limits.on_overload(self.concurrency)
        elif result.outcome is Outcome.SUCCESS:
            self.concurrency = limits.on_success(self.concurrency)
        self.observe(now)

    def observe(self, now: float) -> bool:
        """Note a change of the breaker's state since it was last reported (time alone
        half-opens an open breaker); True when ``events`` holds one to take."""
        b = br.current(self.breaker, now)
        if b.state is not self._reported:
            self._reported = b.state
            self.events.append(BreakerEvent(breaker=b))
        return bool(self.events)

    def take_events(self) -> list[BreakerEvent]:
        events, self.events = self.events, []
        return events

    def wake_in(self, now: float) -> float | None:
        """Seconds until this guard may admit more than now (None: nothing pending)."""
        waits: list[float] = []
        b = br.current(self.breaker, now)
        if b.state is br.BreakerState.OPEN and b.reopens_at is not None:
            waits.append(b.reopens_at - now)
        if self.bucket is not None and limits.available(self.bucket, now) < 1:
            waits.append(limits.next_token_in(self.bucket, now))
        if bg.retries_allowed(self.budget, now, policy=self.policy.budget) <= 0:
            # retries left waiting in the queue may be claimed from then on
            budget = bg.next_retry_in(self.budget, now, policy=self.policy.budget)
            if budget is not None:
                waits.append(budget)
        return min(waits) if waits else None
