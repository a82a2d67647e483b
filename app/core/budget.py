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


@dataclass(frozen=True, slots=True)
class Budget:
    #: (second, first attempts, retries), oldest first, within the window.
    buckets: tuple[tuple[int, int, int], ...] = ()


def _trim(b: Budget, now: float) -> tuple[tuple[int, int, int], ...]:
    oldest = int(now) - WINDOW_S + 1
    return tuple(bucket for bucket in b.buckets if bucket[0] >= oldest)


def _add(b: Budget, now: float, firsts: int, retries: int) -> Budget:
    second = int(now)
    buckets = list(_trim(b, now))
    if buckets and buckets[-1][0] == second:
        _, f, r = buckets[-1]
        buckets[-1] = (second, f + firsts, r + retries)
    else:
        buckets.append((second, firsts, retries))
    return Budget(tuple(buckets))


def record_first(b: Budget, now: float) -> Budget:
    return _add(b, now, 1, 0)


def record_retry(b: Budget, now: float) -> Budget:
    return _add(b, now, 0, 1)


def retries_allowed(b: Budget, now: float) -> int:
    """How many more retries may go out now."""
    buckets = _trim(b, now)
    firsts = sum(f for _, f, _ in buckets)
    retries = sum(r for _, _, r in buckets)
    return max(0, int(RATIO * firsts + FLOOR_PER_S * WINDOW_S) - retries)


def next_retry_in(b: Budget, now: float) -> float | None:
    """Seconds until a retry may go out (0: now); None if the window never allows one."""
    if retries_allowed(b, now) > 0:
        return 0.0
    # the allowance changes only as whole seconds leave the window
    for second in range(int(now) + 1, int(now) + WINDOW_S + 1):
        if retries_allowed(b, second) > 0:
            return second - now
    return None
