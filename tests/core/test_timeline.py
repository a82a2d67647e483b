"""A job's timeline, told from the API's own answers."""

from __future__ import annotations

from typing import Any

from app.core.timeline import Event, timeline


def _job(**fields: Any) -> dict[str, Any]:
    return {
        "id": "j1",
        "idempotency_key": "order-1",
        "state": "queued",
        "created_at": "2026-01-01T00:00:00.000Z",
        "next_attempt_at": "2026-01-01T00:00:00.000Z",
        "completed_at": None,
        "failure_reason": None,
        "held_by": None,
        "held_until": None,
        **fields,
    }


def _attempt(n: int, started: str, finished: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "n": n,
        "started_at": started,
        "finished_at": finished,
        "duration_ms": 12,
        "status_code": None,
        "outcome": None,
        "error": None,
        **fields,
    }


def test_a_failed_job_reads_accepted_then_each_attempt_then_why_it_failed() -> None:
    job = _job(
        state="failed", completed_at="2026-01-01T00:00:09.000Z", failure_reason="retries_exhausted"
    )
    attempts = [
        _attempt(
            2,
            "2026-01-01T00:00:05.000Z",
            "2026-01-01T00:00:09.000Z",
            status_code=500,
            outcome="retryable",
        ),
        _attempt(
            1,
            "2026-01-01T00:00:01.000Z",
            "2026-01-01T00:00:01.500Z",
            error="timeout",
            outcome="retryable",
        ),
    ]
    events = timeline(job, attempts)
    assert [e.what for e in events] == [
        "accepted",
        "attempt 1 sent",
        "attempt 1 answered",
        "attempt 2 sent",
        "attempt 2 answered",
        "failed",
    ]
    assert events[0].detail == "idempotency key order-1"
    assert events[2].detail == "timeout in 12 ms (retryable)" and events[2].tone == "bad"
    assert events[4].detail == "HTTP 500 in 12 ms (retryable)"
    assert events[-1] == Event("2026-01-01T00:00:09.000Z", "failed", "retries_exhausted", "bad")


def test_a_succeeded_job_ends_on_its_success() -> None:
    job = _job(state="succeeded", completed_at="2026-01-01T00:00:02.000Z")
    attempts = [
        _attempt(
            1,
            "2026-01-01T00:00:01.000Z",
            "2026-01-01T00:00:02.000Z",
            status_code=200,
            outcome="success",
        )
    ]
    events = timeline(job, attempts)
    assert events[-2].detail == "HTTP 200 in 12 ms (success)" and events[-2].tone == "ok"
    assert events[-1].what == "succeeded"


def test_a_waiting_job_says_what_holds_it_and_until_when() -> None:
    job = _job(
        state="retrying",
        next_attempt_at="2026-01-01T00:01:00.000Z",
        held_by="breaker",
        held_until="2026-01-01T00:02:00.000Z",
    )
    last = timeline(job, [])[-1]
    assert last.what == "retrying, next attempt"
    assert last.at == "2026-01-01T00:01:00.000Z"
    assert (
        last.detail == "held: the target's circuit breaker is open until 2026-01-01T00:02:00.000Z"
    )


def test_an_attempt_in_flight_has_no_answer_yet_and_the_job_reads_running() -> None:
    job = _job(state="running")
    events = timeline(job, [_attempt(1, "2026-01-01T00:00:01.000Z", None)])
    assert [e.what for e in events] == ["accepted", "attempt 1 sent", "running"]
    assert events[-1].at is None


def test_an_answer_is_said_once_with_its_time_rounded() -> None:
    job = _job(state="retrying")
    answered = _attempt(
        1,
        "2026-01-01T00:00:01.000Z",
        "2026-01-01T00:00:01.015Z",
        status_code=500,
        error="HTTP 500",
        outcome="retryable",
        duration_ms=14.884,
    )
    quick = {
        **answered,
        "n": 2,
        "started_at": "2026-01-01T00:00:02.000Z",
        "finished_at": "2026-01-01T00:00:02.002Z",
        "duration_ms": 2.017,
        "error": "answer cut short",
    }
    events = timeline(job, [answered, quick])
    assert events[2].detail == "HTTP 500 in 15 ms (retryable)"
    assert events[4].detail == "HTTP 500: answer cut short in 2.0 ms (retryable)"
