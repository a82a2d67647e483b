"""``hold_of``: why a job that has not finished is not being sent now."""

from __future__ import annotations

import dataclasses

import pytest

from app.core.hold import NOT_HELD, HeldBy, Hold, hold_of
from app.core.job import JobRecord, JobState
from app.core.target import TargetRecord, TargetSpec

NOW = 1_800_000_000.0


def job(state: JobState = JobState.QUEUED, next_attempt_at: float | None = NOW) -> JobRecord:
    return JobRecord(
        id="0190a000-0000-7000-8000-000000000001",
        caller="acme",
        idempotency_key="k",
        target="billing",
        state=state,
        attempts=0,
        delivery=0,
        max_attempts=10,
        created_at=NOW - 10,
        updated_at=NOW - 10,
        next_attempt_at=next_attempt_at,
        expires_at=NOW + 86400,
        completed_at=None,
        claimed_at=None,
        lease_expires_at=None,
        last_status_code=None,
        last_error=None,
        failure_reason=None,
        payload=b"{}",
        headers=None,
    )


def target(*, enabled: bool = True, paused_until: float | None = None) -> TargetRecord:
    return TargetRecord(
        spec=TargetSpec(name="billing", url="http://x/hook", enabled=enabled),
        disabled_reason=None if enabled else "disabled by an operator",
        paused_until=paused_until,
        created_at=NOW - 100,
        updated_at=NOW - 100,
    )


@dataclasses.dataclass(frozen=True)
class Live:
    breaker: str = "closed"
    breaker_reopens_at: float | None = None
    rate_free_at: float | None = None


def test_a_due_job_at_a_healthy_target_is_not_held() -> None:
    assert hold_of(job(), target(), Live(), NOW) == NOT_HELD
    assert hold_of(job(), None, None, NOW) == NOT_HELD


@pytest.mark.parametrize(
    "state", [JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]
)
def test_a_running_or_finished_job_is_never_held(state: JobState) -> None:
    stopped = target(enabled=False, paused_until=NOW + 60)
    live = Live(breaker="open", breaker_reopens_at=NOW + 30, rate_free_at=NOW + 1)
    assert hold_of(job(state, NOW + 60), stopped, live, NOW) == NOT_HELD


@pytest.mark.parametrize("state", [JobState.SCHEDULED, JobState.RETRYING])
def test_a_job_not_yet_due_is_held_by_its_schedule_until_then(state: JobState) -> None:
    assert hold_of(job(state, NOW + 60), target(), Live(), NOW) == Hold(HeldBy.SCHEDULE, NOW + 60)
    # due (a claim round has not promoted it yet): not held
    assert hold_of(job(state, NOW), target(), Live(), NOW) == NOT_HELD


def test_a_disabled_target_holds_its_jobs_with_no_end_known() -> None:
    assert hold_of(job(), target(enabled=False), Live(), NOW) == Hold(HeldBy.DISABLED, None)
    # whatever else holds the job, a disabled target holds it longest
    live = Live(breaker="open", breaker_reopens_at=NOW + 30)
    stopped = target(enabled=False, paused_until=NOW + 60)
    assert hold_of(job(JobState.SCHEDULED, NOW + 90), stopped, live, NOW).by is HeldBy.DISABLED


def test_a_paused_target_holds_its_jobs_until_the_pause_ends() -> None:
    assert hold_of(job(), target(paused_until=NOW + 60), Live(), NOW) == Hold(
        HeldBy.PAUSE, NOW + 60
    )
    assert hold_of(job(), target(paused_until=NOW), Live(), NOW) == NOT_HELD  # it just ended


def test_an_open_breaker_holds_its_targets_jobs_until_it_probes() -> None:
    live = Live(breaker="open", breaker_reopens_at=NOW + 30)
    assert hold_of(job(), target(), live, NOW) == Hold(HeldBy.BREAKER, NOW + 30)


def test_a_probing_breaker_holds_its_targets_jobs_until_its_probe_answers() -> None:
    assert hold_of(job(), target(), Live(breaker="half_open"), NOW) == Hold(HeldBy.BREAKER)


def test_an_empty_rate_bucket_holds_due_jobs_until_its_next_token() -> None:
    assert hold_of(job(), target(), Live(rate_free_at=NOW + 0.5), NOW) == Hold(
        HeldBy.RATE, NOW + 0.5
    )
    assert hold_of(job(), target(), Live(rate_free_at=NOW), NOW) == NOT_HELD


def test_of_several_holds_the_one_that_ends_last_is_shown() -> None:
    live = Live(breaker="open", breaker_reopens_at=NOW + 30, rate_free_at=NOW + 1)
    paused = target(paused_until=NOW + 60)
    assert hold_of(job(), paused, live, NOW) == Hold(HeldBy.PAUSE, NOW + 60)
    assert hold_of(job(), target(), live, NOW) == Hold(HeldBy.BREAKER, NOW + 30)
    later = job(JobState.SCHEDULED, NOW + 3600)
    assert hold_of(later, paused, live, NOW) == Hold(HeldBy.SCHEDULE, NOW + 3600)
    # a hold whose end is not known binds no longer than one whose end is
    assert hold_of(job(), target(), Live(breaker="half_open", rate_free_at=NOW + 1), NOW) == (
        Hold(HeldBy.RATE, NOW + 1)
    )
    # a throttled job waits for the pause its target answered: the pause is named
    throttled = job(JobState.RETRYING, NOW + 60)
    assert hold_of(throttled, paused, Live(), NOW) == Hold(HeldBy.PAUSE, NOW + 60)


def test_without_its_target_or_the_dispatcher_only_the_schedule_is_known() -> None:
    assert hold_of(job(JobState.SCHEDULED, NOW + 60), None, None, NOW) == Hold(
        HeldBy.SCHEDULE, NOW + 60
    )
    assert hold_of(job(JobState.RETRYING, NOW - 1), None, None, NOW) == NOT_HELD
