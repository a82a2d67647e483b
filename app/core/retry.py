"""The retry schedule: what becomes of a job after one attempt.

``decide`` returns a ``Decision`` instead of acting on it, so the dispatcher
only carries it out. Backoff is ``min(max, initial * 2**(n-1))`` with full
jitter (a uniform draw in ``[0, cap]``), which spreads retries of many jobs
that failed together instead of bringing them back as one wave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.core.job import FailureReason, JobRecord, JobState
from app.core.outcome import RETRY_AFTER_MIN_S, Classified, Outcome
from app.core.target import TargetSpec

Random = Callable[[], float]

#: a retry over its target's budget waits about this long (jittered) before it is due again
RETRY_DEFER_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A job's limits, resolved from its own overrides and its target."""

    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    expires_at: float


def policy_for(job: JobRecord, target: TargetSpec | None) -> Policy:
    """``job``'s limits on ``target``; a target since deleted lends its defaults."""
    spec = target or _DEFAULTS
    return Policy(
        max_attempts=job.max_attempts,
        backoff_initial_s=spec.backoff_initial_s,
        backoff_max_s=spec.backoff_max_s,
        expires_at=job.expires_at,
    )


_DEFAULTS = TargetSpec(name="", url="")


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    state: JobState
    attempts: int
    next_attempt_at: float | None
    failure_reason: FailureReason | None = None
    #: pause the whole target until then (throttling).
    pause_target_until: float | None = None
    #: disable the target (it answered 410).
    disable_target: bool = False


def backoff_cap(n: int, initial_s: float, max_s: float) -> float:
    """The ceiling of the n-th retry's delay (n starts at 1)."""
    exponent = min(max(n - 1, 0), 62)  # 2**62 already dwarfs any max_s
    return float(min(max_s, initial_s * (2**exponent)))


def backoff_delay(n: int, initial_s: float, max_s: float, rng: Random) -> float:
    return rng() * backoff_cap(n, initial_s, max_s)


def decide(policy: Policy, attempts: int, result: Classified, now: float, rng: Random) -> Decision:
    """The job's next state after an attempt that ``result`` describes.

    ``attempts`` is the number of counted attempts before this one.
    """
    used = attempts + 1 if result.counted else attempts
    match result.outcome:
        case Outcome.SUCCESS:
            return Decision(state=JobState.SUCCEEDED, attempts=used, next_attempt_at=None)
        case Outcome.PERMANENT:
            return Decision(
                state=JobState.FAILED,
                attempts=used,
                next_attempt_at=None,
                failure_reason=(
                    FailureReason.TARGET_GONE if result.gone else FailureReason.PERMANENT_STATUS
                ),
                disable_target=result.gone,
            )
        case Outcome.THROTTLED:
            delay = result.retry_after_s
            if delay is None:
                # a pause shorter than the clamp's floor would not relieve the target
                delay = max(
                    RETRY_AFTER_MIN_S,
                    backoff_delay(used + 1, policy.backoff_initial_s, policy.backoff_max_s, rng),
                )
            until = now + delay
            return _wait_or_expire(policy, used, until, pause_target_until=until)
        case Outcome.INTERRUPTED:
            if used >= policy.max_attempts:
                return _failed(used, FailureReason.ATTEMPTS_EXHAUSTED)
            if not result.counted:
                return Decision(state=JobState.QUEUED, attempts=used, next_attempt_at=now)
            return _wait_or_expire(policy, used, now)
        case Outcome.RETRYABLE:
            if used >= policy.max_attempts:
                return _failed(used, FailureReason.ATTEMPTS_EXHAUSTED)
            delay = backoff_delay(used, policy.backoff_initial_s, policy.backoff_max_s, rng)
            return _wait_or_expire(policy, used, now + delay)
    raise AssertionError(f"unhandled outcome {result.outcome}")  # pragma: no cover


def _failed(attempts: int, reason: FailureReason) -> Decision:
    return Decision(
        state=JobState.FAILED, attempts=attempts, next_attempt_at=None, failure_reason=reason
    )


def _wait_or_expire(
    policy: Policy, attempts: int, at: float, *, pause_target_until: float | None = None
) -> Decision:
    if at >= policy.expires_at:
        return Decision(
            state=JobState.FAILED,
            attempts=attempts,
            next_attempt_at=None,
            failure_reason=FailureReason.EXPIRED,
            pause_target_until=pause_target_until,
        )
    return Decision(
        state=JobState.RETRYING,
        attempts=attempts,
        next_attempt_at=at,
        pause_target_until=pause_target_until,
    )


def expired_before_sending(job: JobRecord, now: float) -> Decision | None:
    """A claimed job whose time ran out before its request could go: ``failed``
    (``expired``) without an attempt. None while it may still be sent."""
    if job.expires_at > now:
        return None
    return Decision(
        state=JobState.FAILED,
        attempts=job.attempts,
        next_attempt_at=None,
        failure_reason=FailureReason.EXPIRED,
    )


def deferred(job: JobRecord, now: float, rng: Random) -> Decision:
    """A claimed retry over its target's retry budget goes back unsent and is due
    again in about ``RETRY_DEFER_S`` (jittered, so deferred retries do not return
    as one wave); nothing is counted."""
    return Decision(
        state=JobState.RETRYING,
        attempts=job.attempts,
        next_attempt_at=now + RETRY_DEFER_S * (0.5 + rng()),
    )
