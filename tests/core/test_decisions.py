"""The decisions the core owns and storage and the dispatcher only carry out."""

from __future__ import annotations

import dataclasses

import pytest

from app.core.attempt import RESCUED_ERROR, rescued
from app.core.job import FailureReason, JobRecord, JobState, NewJob, admit, initial_state
from app.core.outcome import Outcome
from app.core.retry import RETRY_DEFER_S, Decision, deferred, expired_before_sending, policy_for
from app.core.target import (
    SPEC_FIELDS,
    Effects,
    TargetRecord,
    TargetSpec,
    disabled_reason,
    effects,
    with_effects,
)

NOW = 1_800_000_000.0
TARGET = TargetSpec(
    name="billing",
    url="http://x/hook",
    max_attempts=4,
    backoff_initial_s=2.0,
    backoff_max_s=30.0,
    max_retry_duration_s=600.0,
)


def new_job(**changes: object) -> NewJob:
    job = NewJob(
        id="0190a000-0000-7000-8000-000000000001",
        caller="acme",
        idempotency_key="k",
        fingerprint="f",
        target="billing",
        payload=b"{}",
        headers={"X-Job": "1"},
        max_attempts=None,
        next_attempt_at=NOW,
        expires_at=None,
        created_at=NOW,
    )
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


def test_a_job_due_now_starts_queued_and_a_later_one_scheduled() -> None:
    assert initial_state(NOW, NOW) is JobState.QUEUED
    assert initial_state(NOW - 5, NOW) is JobState.QUEUED
    assert initial_state(NOW + 0.001, NOW) is JobState.SCHEDULED
    assert admit(new_job(next_attempt_at=NOW + 60), TARGET).state is JobState.SCHEDULED


def test_admit_takes_the_targets_limits_where_the_producer_set_none() -> None:
    job = admit(new_job(), TARGET)
    assert (job.max_attempts, job.expires_at) == (4, NOW + 600.0)
    assert (job.attempts, job.delivery, job.state) == (0, 0, JobState.QUEUED)
    own = admit(new_job(max_attempts=2, expires_at=NOW + 30), TARGET)
    assert (own.max_attempts, own.expires_at) == (2, NOW + 30)


def stored(**changes: object) -> JobRecord:
    return dataclasses.replace(admit(new_job(), TARGET), **changes)  # type: ignore[arg-type]


def test_the_policy_is_the_jobs_limits_on_its_target_or_the_defaults_once_deleted() -> None:
    job = stored(max_attempts=3)
    policy = policy_for(job, TARGET)
    assert (policy.max_attempts, policy.backoff_initial_s, policy.backoff_max_s) == (3, 2.0, 30.0)
    assert policy.expires_at == job.expires_at
    gone = policy_for(job, None)
    defaults = TargetSpec(name="any", url="http://x")
    assert (gone.backoff_initial_s, gone.backoff_max_s) == (
        defaults.backoff_initial_s,
        defaults.backoff_max_s,
    )


def test_a_job_whose_time_ran_out_fails_expired_before_any_request() -> None:
    job = stored(attempts=2, expires_at=NOW + 10)
    assert expired_before_sending(job, NOW + 9.999) is None
    decision = expired_before_sending(job, NOW + 10)
    assert decision == Decision(
        state=JobState.FAILED,
        attempts=2,
        next_attempt_at=None,
        failure_reason=FailureReason.EXPIRED,
    )


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_a_retry_over_budget_waits_about_a_second_and_counts_nothing(draw: float) -> None:
    decision = deferred(stored(attempts=3), NOW, lambda: draw)
    assert (decision.state, decision.attempts) == (JobState.RETRYING, 3)
    assert decision.next_attempt_at == pytest.approx(NOW + RETRY_DEFER_S * (0.5 + draw))


def test_a_rescued_delivery_is_a_counted_interruption_retried_by_the_targets_backoff() -> None:
    job = stored(state=JobState.RUNNING, attempts=1, delivery=2, claimed_at=NOW - 40)
    completion = rescued(job, TARGET, NOW, lambda: 0.5, lapsed_before=NOW - 5)
    assert (completion.delivery, completion.lapsed_before) == (2, NOW - 5)
    assert completion.decision.state is JobState.RETRYING
    assert completion.decision.attempts == 2
    # the second retry's cap is 2 s * 2 = 4 s; half of it drawn
    assert completion.decision.next_attempt_at == pytest.approx(NOW + 2.0)
    attempt = completion.attempt
    assert attempt is not None
    assert (attempt.delivery, attempt.outcome, attempt.error) == (
        2,
        Outcome.INTERRUPTED,
        RESCUED_ERROR,
    )
    assert attempt.duration_ms == pytest.approx(40_000)


def test_a_rescue_of_the_last_attempt_fails_the_job() -> None:
    job = stored(state=JobState.RUNNING, attempts=3, delivery=4, claimed_at=NOW - 40)
    decision = rescued(job, TARGET, NOW, lambda: 0.5, lapsed_before=None).decision
    assert (decision.state, decision.failure_reason) == (
        JobState.FAILED,
        FailureReason.ATTEMPTS_EXHAUSTED,
    )


def record(**changes: object) -> TargetRecord:
    target = TargetRecord(
        spec=TARGET, disabled_reason=None, paused_until=None, created_at=NOW, updated_at=NOW
    )
    return dataclasses.replace(target, **changes)  # type: ignore[arg-type]


def test_outcomes_without_target_effects_have_none() -> None:
    plain = Decision(state=JobState.SUCCEEDED, attempts=1, next_attempt_at=None)
    assert effects(plain, 200) is None


def test_a_throttled_answer_pauses_the_target_and_a_pause_only_grows() -> None:
    decision = Decision(
        state=JobState.RETRYING,
        attempts=1,
        next_attempt_at=NOW + 30,
        pause_target_until=NOW + 30,
    )
    change = effects(decision, 429)
    assert change == Effects(pause_until=NOW + 30)
    assert with_effects(record(), change, NOW).paused_until == NOW + 30
    assert with_effects(record(paused_until=NOW + 60), change, NOW).paused_until == NOW + 60


def test_gone_disables_the_target_and_says_why() -> None:
    decision = Decision(
        state=JobState.FAILED,
        attempts=1,
        next_attempt_at=None,
        failure_reason=FailureReason.TARGET_GONE,
        disable_target=True,
    )
    change = effects(decision, 410)
    assert change == Effects(disabled_reason="the target answered 410 Gone")
    after = with_effects(record(), change, NOW + 1)
    assert after.spec.enabled is False
    assert (after.disabled_reason, after.updated_at) == ("the target answered 410 Gone", NOW + 1)


def test_the_targets_fields_are_declared_once() -> None:
    assert SPEC_FIELDS[0] == "url" and "name" not in SPEC_FIELDS
    assert set(SPEC_FIELDS) | {"name"} == {f.name for f in dataclasses.fields(TargetSpec)}
    assert disabled_reason(TARGET) is None
    assert disabled_reason(dataclasses.replace(TARGET, enabled=False)) == "disabled by an operator"
