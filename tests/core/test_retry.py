import pytest

from app.core.job import FailureReason, JobState
from app.core.outcome import Classified, FailureKind, Outcome, classify_failure, classify_response
from app.core.retry import Policy, backoff_cap, backoff_delay, decide

NOW = 1_800_000_000.0
POLICY = Policy(max_attempts=3, backoff_initial_s=1.0, backoff_max_s=600.0, expires_at=NOW + 3600)


def always(value: float):
    return lambda: value


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    assert [backoff_cap(n, 1.0, 600.0) for n in range(1, 12)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        512,
        600,
    ]
    assert backoff_cap(10_000, 1.0, 600.0) == 600.0


def test_full_jitter_draws_between_zero_and_the_cap() -> None:
    assert backoff_delay(4, 1.0, 600.0, always(0.0)) == 0.0
    assert backoff_delay(4, 1.0, 600.0, always(0.5)) == 4.0
    assert backoff_delay(4, 1.0, 600.0, always(0.999)) == pytest.approx(7.992)


def test_success_counts_the_attempt_and_finishes() -> None:
    d = decide(POLICY, 1, classify_response(204, None, NOW), NOW, always(0.5))
    assert (d.state, d.attempts, d.next_attempt_at) == (JobState.SUCCEEDED, 2, None)


def test_retryable_failure_backs_off_with_jitter() -> None:
    d = decide(POLICY, 1, classify_response(503, None, NOW), NOW, always(0.5))
    assert d.state is JobState.RETRYING
    assert d.attempts == 2
    assert d.next_attempt_at == NOW + 1.0  # cap for the 2nd attempt is 2 s, half of it


def test_last_counted_attempt_fails_the_job_as_exhausted() -> None:
    d = decide(POLICY, 2, classify_failure(FailureKind.TIMEOUT, timeout_s=10), NOW, always(0.5))
    assert d.state is JobState.FAILED
    assert d.failure_reason is FailureReason.ATTEMPTS_EXHAUSTED
    assert d.attempts == 3


def test_a_retry_that_would_land_after_expiry_fails_as_expired() -> None:
    policy = Policy(max_attempts=10, backoff_initial_s=100, backoff_max_s=600, expires_at=NOW + 10)
    d = decide(policy, 0, classify_response(500, None, NOW), NOW, always(0.5))
    assert d.state is JobState.FAILED
    assert d.failure_reason is FailureReason.EXPIRED


def test_gone_fails_the_job_and_disables_the_target() -> None:
    d = decide(POLICY, 0, classify_response(410, None, NOW), NOW, always(0.5))
    assert d.state is JobState.FAILED
    assert d.failure_reason is FailureReason.TARGET_GONE
    assert d.disable_target


def test_other_client_errors_fail_permanently() -> None:
    d = decide(POLICY, 0, classify_response(400, None, NOW), NOW, always(0.5))
    assert (d.state, d.failure_reason, d.attempts) == (
        JobState.FAILED,
        FailureReason.PERMANENT_STATUS,
        1,
    )


def test_throttling_pauses_the_target_and_spends_no_attempt() -> None:
    d = decide(POLICY, 2, classify_response(429, "7", NOW), NOW, always(0.5))
    assert d.state is JobState.RETRYING
    assert d.attempts == 2
    assert d.next_attempt_at == NOW + 7
    assert d.pause_target_until == NOW + 7


def test_throttling_without_retry_after_backs_off() -> None:
    d = decide(POLICY, 0, classify_response(429, None, NOW), NOW, always(0.5))
    assert d.pause_target_until == NOW + 1.0  # never shorter than Retry-After's 1 s floor
    d = decide(POLICY, 2, classify_response(429, None, NOW), NOW, always(0.5))
    assert d.pause_target_until == NOW + 2.0  # half of the 3rd attempt's 4 s cap


def test_crash_interruption_counts_and_retries_at_once() -> None:
    crashed = Classified(outcome=Outcome.INTERRUPTED, counted=True, error="lease lost")
    d = decide(POLICY, 0, crashed, NOW, always(0.5))
    assert (d.state, d.attempts, d.next_attempt_at) == (JobState.RETRYING, 1, NOW)
    assert decide(POLICY, 2, crashed, NOW, always(0.5)).failure_reason is (
        FailureReason.ATTEMPTS_EXHAUSTED
    )


def test_drain_interruption_requeues_without_counting() -> None:
    drained = Classified(outcome=Outcome.INTERRUPTED, counted=False, error="drain")
    d = decide(POLICY, 2, drained, NOW, always(0.5))
    assert (d.state, d.attempts, d.next_attempt_at) == (JobState.QUEUED, 2, NOW)
