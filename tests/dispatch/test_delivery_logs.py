"""The delivery log: a failed attempt and a failed job are warnings, the rest is not."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from app.core.job import JobState
from app.core.outcome import FailureKind
from app.core.target import TargetSpec
from app.dispatch.sender import Failure
from app.storage.base import JobStore
from app.testing import FakeClock, FakeSender, Reply
from tests.dispatch.conftest import Start
from tests.dispatch.harness import URL, Harness, eventually, maintenance_on


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="csjd.dispatch"):
        yield caplog


def lines(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == event]


@pytest.mark.parametrize(
    ("reply", "outcome", "level"),
    [
        (Reply(status=200), "success", logging.INFO),
        (Reply(status=503), "retryable", logging.WARNING),
        (Reply(hang=True), "retryable", logging.WARNING),  # a timeout
        (
            Failure(kind=FailureKind.CONNECTION_REFUSED, message="refused"),
            "retryable",
            logging.WARNING,
        ),
        (Failure(kind=FailureKind.DNS, message="no such host"), "retryable", logging.WARNING),
        (Reply(status=400), "permanent", logging.WARNING),
        (Reply(status=429, headers={"Retry-After": "5"}), "throttled", logging.INFO),
    ],
    ids=["200", "503", "timeout", "refused", "dns", "400", "429"],
)
async def test_an_attempt_that_failed_logs_its_delivery_line_as_a_warning(
    start: Start,
    caplog: pytest.LogCaptureFixture,
    reply: Reply | Failure,
    outcome: str,
    level: int,
) -> None:
    sender = FakeSender()
    sender.script(URL, [reply])
    h = await start(sender=sender, clock=FakeClock())
    await h.put_target(timeout_s=0.1)
    await h.enqueue()
    await eventually(lambda: bool(lines(caplog, "delivery")))
    [line] = lines(caplog, "delivery")
    assert (vars(line)["outcome"], line.levelno) == (outcome, level)


async def test_a_job_that_ends_failed_logs_job_failed_as_a_warning(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    sender = FakeSender()
    sender.script(URL, [Reply(status=500), Reply(status=500), Reply(status=400)])
    h = await start(sender=sender)  # the system's clock: the retry comes due by itself
    await h.put_target(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01)
    await h.put_target("other", url="http://127.0.0.1:9/other")
    exhausted = await h.enqueue("exhausted")
    await h.wait_for_job(exhausted.id, lambda j: j.state is JobState.FAILED)
    await eventually(lambda: bool(lines(caplog, "job_failed")))
    refused = await h.enqueue("refused")
    await h.wait_for_job(refused.id, lambda j: j.state is JobState.FAILED)
    succeeded = await h.enqueue("fine", target="other")
    await h.wait_for_job(succeeded.id, lambda j: j.state is JobState.SUCCEEDED)
    await eventually(lambda: len(lines(caplog, "job_failed")) == 2)
    first, second = lines(caplog, "job_failed")
    assert {first.levelno, second.levelno} == {logging.WARNING}
    assert {k: vars(first)[k] for k in ("job_id", "target", "failure_reason", "attempts")} == {
        "job_id": exhausted.id,
        "target": "billing",
        "failure_reason": "attempts_exhausted",
        "attempts": 2,
    }
    assert (vars(second)["job_id"], vars(second)["failure_reason"]) == (
        refused.id,
        "permanent_status",
    )


async def test_a_job_that_expires_before_its_request_goes_logs_job_failed(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    sender, clock = FakeSender(), FakeClock()
    h = await start(sender=sender, clock=clock)
    await h.put_target(max_retry_duration_s=1)
    job = await h.enqueue(delay_s=5)  # due after its time runs out
    h.advance(6)
    await h.wait_for_job(job.id, lambda j: j.state is JobState.FAILED)
    await eventually(lambda: bool(lines(caplog, "job_failed")))
    [line] = lines(caplog, "job_failed")
    assert (line.levelno, vars(line)["failure_reason"]) == (logging.WARNING, "expired")
    assert sender.requests == [] and lines(caplog, "delivery") == []


async def test_jobs_that_expire_waiting_are_logged_as_a_warning(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    await store.put_target(TargetSpec(name="billing", url=URL, enabled=False), clock.now())
    h = Harness(store, FakeSender(), clock, max_inflight=1)  # never started: only enqueues
    job = await h.enqueue()
    clock.advance(86400 + 1)
    maintenance = maintenance_on(store, clock)
    await maintenance.tick(purge=False)
    assert (await h.job(job.id)).state is JobState.FAILED
    [line] = lines(caplog, "jobs_expired")
    assert (line.levelno, vars(line)["count"]) == (logging.WARNING, 1)
