"""The retry budget of one target: retries stay a small share of first attempts.

Over a sliding 10 s window a target may receive retries up to 20 % of its
first attempts plus a floor of 10 per second (the shape of Finagle's
``RetryBudget``). A retry over budget is postponed, never dropped, so however
badly a target behaves the traffic it receives stays near the offered load:
the dispatcher claims no more retries than ``retries_allowed`` and looks again
after ``next_retry_in``. The window is kept as per-second buckets in an
immutable tuple.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW_S = 10
RATIO = 0.2
FLOOR_PER_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The window and the allowance; every target's is ``DEFAULT`` (the numbers
    above), and a test may hand the dispatcher others."""

    window_s: int = WINDOW_S
    ratio: float = RATIO
    floor_per_s: float = FLOOR_PER_S


DEFAULT = Policy()


@dataclass(frozen=True, slots=True)
class Budget:
    #: (second, first attempts, retries), oldest first, within the window.
    buckets: tuple[tuple[int, int, int], ...] = ()


def _trim(b: Budget, now: float, window_s: int) -> tuple[tuple[int, int, int], ...]:
    oldest = int(now) - window_s + 1
    return tuple(bucket for bucket in b.buckets if bucket[0] >= oldest)


def _add(b: Budget, now: float, firsts: int, retries: int, window_s: int) -> Budget:
    second = int(now)
    buckets = list(_trim(b, now, window_s))
    if buckets and buckets[-1][0] == second:
        _, f, r = buckets[-1]
        buckets[-1] = (second, f + firsts, r + retries)
    else:
        buckets.append((second, firsts, retries))
    return Budget(tuple(buckets))


def record_first(b: Budget, now: float, *, policy: Policy = DEFAULT) -> Budget:
    return _add(b, now, 1, 0, policy.window_s)


def record_retry(b: Budget, now: float, *, policy: Policy = DEFAULT) -> Budget:
    return _add(b, now, 0, 1, policy.window_s)


def retries_allowed(b: Budget, now: float, *, policy: Policy = DEFAULT) -> int:
    """How many more retries may go out now."""
    buckets = _trim(b, now, policy.window_s)
    firsts = sum(f for _, f, _ in buckets)
    retries = sum(r for _, _, r in buckets)
    return max(0, int(policy.ratio * firsts + policy.floor_per_s * policy.window_s) - retries)


def next_retry_in(b: Budget, now: float, *, policy: Policy = DEFAULT) -> float | None:
    """Seconds until a retry may go out (0: now); None if the window never allows one."""
    if retries_allowed(b, now, policy=policy) > 0:
        return 0.0
    # the allowance changes only as whole seconds leave the window
    for second in range(int(now) + 1, int(now) + policy.window_s + 1):
        if retries_allowed(b, second, policy=policy) > 0:
            return second - now
    return None
