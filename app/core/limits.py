"""How many deliveries a target may have in flight, and how fast it may get them.

``Concurrency`` is AIMD between 1 and the target's ``max_concurrency``: every
window of successes (as many as the current limit) adds one, a throttle or a
timeout halves it. After a breaker closes the limit restarts at 1 and doubles
per window of successes until it reaches the maximum (slow start), so a
recovering target is never hit with everything at once.

``Bucket`` is the optional ``rate_limit_per_s`` token bucket (a burst of one
second's worth).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Concurrency:
    limit: int
    maximum: int
    slow_start: bool = False
    successes: int = 0


def fresh(maximum: int) -> Concurrency:
    return Concurrency(limit=maximum, maximum=maximum)


def resize(c: Concurrency, maximum: int) -> Concurrency:
    """The operator changed ``max_concurrency``: a limit at the old maximum follows it."""
    limit = maximum if c.limit >= c.maximum and not c.slow_start else min(c.limit, maximum)
    return replace(c, maximum=maximum, limit=limit)


def on_success(c: Concurrency) -> Concurrency:
    successes = c.successes + 1
    if successes < c.limit:
        return replace(c, successes=successes)
    if c.slow_start:
        limit = min(c.maximum, c.limit * 2)
        return replace(c, limit=limit, successes=0, slow_start=limit < c.maximum)
    return replace(c, limit=min(c.maximum, c.limit + 1), successes=0)


def on_overload(c: Concurrency) -> Concurrency:
    """A throttle or a timeout: halve, and leave slow start."""
    return replace(c, limit=max(1, c.limit // 2), successes=0, slow_start=False)


def restart(c: Concurrency) -> Concurrency:
    """After an outage: from 1, doubling per window of successes."""
    return replace(c, limit=1, successes=0, slow_start=c.maximum > 1)


@dataclass(frozen=True, slots=True)
class Bucket:
    rate: float
    tokens: float
    updated_at: float

    @property
    def burst(self) -> float:
        return max(1.0, self.rate)


def bucket(rate: float, now: float) -> Bucket:
    return Bucket(rate=rate, tokens=max(1.0, rate), updated_at=now)


def refill(b: Bucket, now: float) -> Bucket:
    elapsed = max(0.0, now - b.updated_at)
    return replace(b, tokens=min(b.burst, b.tokens + elapsed * b.rate), updated_at=now)


def available(b: Bucket, now: float) -> int:
    return int(refill(b, now).tokens)


def take(b: Bucket, n: int, now: float) -> Bucket:
    b = refill(b, now)
    return replace(b, tokens=b.tokens - n)


def next_token_in(b: Bucket, now: float) -> float:
    b = refill(b, now)
    return 0.0 if b.tokens >= 1 else (1 - b.tokens) / b.rate
