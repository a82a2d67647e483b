"""One delivery behind the sender seam: what is sent, and what becomes of the job after."""

from __future__ import annotations

import asyncio

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.core.job import FailureReason, JobState
from app.core.outcome import Outcome
from app.core.request import Request
from app.core.signing import sign
from app.dispatch.sender import AiohttpSender, Failure, Response
from app.testing import FakeClock, FakeSender, Reply, Sink
from tests.dispatch.conftest import Start
from tests.dispatch.harness import URL, HangingSender, eventually

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW_SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


async def test_the_delivery_request_is_exactly_what_the_contract_says(start: Start) -> None:
    sender, clock = FakeSender(), FakeClock()
    h = await start(sender=sender, clock=clock)
    await h.put_target(secret=SECRET, headers={"X-Tenant": "acme", "X-Both": "target"})
    job = await h.enqueue(
        "k", payload=b'{"b":1,"a":[1,2]}', headers={"X-Job": "j", "x-both": "job"}
    )
    await eventually(lambda: len(sender.requests) == 1)
    request = sender.requests[0]
    assert request.url == URL
    assert request.body == b'{"b":1,"a":[1,2]}'
    assert request.timeout_s == 10.0
    ts = int(clock.now())
    assert list(request.headers.items()) == [
        ("content-type", "application/json"),
        ("user-agent", "csjd/0.1.0"),
        ("webhook-id", job.id),
        ("webhook-timestamp", str(ts)),
        ("webhook-signature", sign(SECRET, job.id, ts, request.body)),
        ("idempotency-key", job.id),
        ("csjd-attempt", "1"),
        ("X-Tenant", "acme"),
        ("X-Job", "j"),
        ("x-both", "job"),
    ]


@pytest.mark.parametrize("secrets", [[SECRET], [NEW_SECRET, SECRET]], ids=["one", "rotating"])
async def test_a_real_delivery_verifies_with_the_reference_verifier_under_each_secret(
    start: Start, secrets: list[str]
) -> None:
    with Sink() as sink:
        h = await start(sender=AiohttpSender(max_connections=4, allow_private=True))
        await h.put_target(url=sink.url("/hook"), secret=" ".join(secrets))
        job = await h.enqueue()
        await h.wait_for_job(job.id, lambda j: j.state is JobState.SUCCEEDED)
        (got,) = sink.received("/hook")
    assert len(got.headers["webhook-signature"].split(" ")) == len(secrets)
    for secret in secrets:
        # during a rotation, consumers still on the old secret keep verifying
        assert Webhook(secret).verify(got.body, got.headers) == {"n": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)


async def test_unsigned_when_the_target_has_no_secret(start: Start) -> None:
    sender = FakeSender()
    h = await start(sender=sender)
    await h.put_target()
    await h.enqueue()
    await eventually(lambda: len(sender.requests) == 1)
    assert "webhook-signature" not in sender.requests[0].headers


async def test_retries_wait_for_their_backoff_and_count_every_request(start: Start) -> None:
    sender = FakeSender()
    sender.script(URL, [Reply(status=503), Reply(status=502)])
    h = await start(sender=sender, clock=FakeClock())
    await h.put_target(backoff_initial_s=100, backoff_max_s=100)
    job = await h.enqueue()
    await eventually(lambda: len(sender.requests) == 1)
    waiting = await h.wait_for_job(job.id, lambda j: j.state is JobState.RETRYING)
    assert waiting.attempts == 1 and waiting.last_error == "HTTP 503"
    h.advance(100)  # past any jittered delay within the 100 s cap
    await eventually(lambda: len(sender.requests) == 2)
    h.advance(100)
    done = await h.wait_for_job(job.id, lambda j: j.state is JobState.SUCCEEDED)
    assert done.attempts == 3
    assert [r.headers["csjd-attempt"] for r in sender.requests] == ["1", "2", "3"]
    assert {r.headers["webhook-id"] for r in sender.requests} == {job.id}


async def test_throttling_pauses_the_whole_target_without_spending_attempts(
    start: Start,
) -> None:
    sender = FakeSender()
    sender.script(URL, [Reply(status=429, headers={"Retry-After": "30"})])
    h = await start(sender=sender, clock=FakeClock())
    await h.put_target(max_concurrency=1)
    first = await h.enqueue("a")
    second = await h.enqueue("b")
    await eventually(lambda: len(sender.requests) >= 1)
    paused = await h.wait_for_job(first.id, lambda j: j.state is JobState.RETRYING)
    assert paused.attempts == 0 and paused.last_status_code == 429
    assert (await h.target()).paused_until is not None
    # nothing goes to the paused target, not even the other job
    h.dispatcher.wake()
    await asyncio.sleep(0.2)  # give a wrongly eager dispatcher the chance to send
    assert len(sender.requests) == 1
    h.advance(30)
    for job in (first, second):
        done = await h.wait_for_job(job.id, lambda j: j.state is JobState.SUCCEEDED)
        assert done.attempts == 1
    attempts = await h.attempts(first.id)
    assert [a.outcome for a in attempts] == [Outcome.THROTTLED, Outcome.SUCCESS]


async def test_503_with_retry_after_throttles_but_without_it_retries(start: Start) -> None:
    sender = FakeSender()
    sender.script(URL, [Reply(status=503, headers={"Retry-After": "5"}), Reply(status=503)])
    h = await start(sender=sender, clock=FakeClock())
    await h.put_target()
    job = await h.enqueue()
    throttled = await h.wait_for_job(job.id, lambda j: j.last_status_code == 503)
    assert throttled.attempts == 0
    h.advance(5)
    retried = await h.wait_for_job(job.id, lambda j: j.attempts == 1)
    assert retried.state is JobState.RETRYING


async def test_gone_fails_the_job_and_disables_the_target(start: Start) -> None:
    sender = FakeSender()
    sender.script(URL, [Reply(status=410)])
    h = await start(sender=sender)
    await h.put_target(max_concurrency=1)
    first = await h.enqueue("a")
    failed = await h.wait_for_job(first.id, lambda j: j.state is JobState.FAILED)
    assert failed.failure_reason is FailureReason.TARGET_GONE
    target = await h.target()
    assert target.spec.enabled is False
    assert target.disabled_reason is not None and "410" in target.disabled_reason
    second = await h.enqueue("b")
    await asyncio.sleep(0.2)  # a disabled target must not be sent anything
    assert len(sender.requests) == 1
    assert (await h.job(second.id)).state is JobState.QUEUED
    await h.put_target(max_concurrency=1, enabled=True)
    await h.wait_for_job(second.id, lambda j: j.state is JobState.SUCCEEDED)


async def test_an_exception_inside_a_delivery_is_a_retryable_attempt(start: Start) -> None:
    class Exploding(FakeSender):
        calls = 0

        async def send(self, request: Request) -> Response | Failure:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("sender bug")
            return await super().send(request)

    h = await start(sender=Exploding(), clock=FakeClock())
    await h.put_target()
    job = await h.enqueue("a")
    failed_once = await h.wait_for_job(job.id, lambda j: j.attempts == 1)
    # the exception is logged; the producer reads only that csjd failed
    assert failed_once.last_error == "internal error in csjd"
    h.advance(2)
    await h.wait_for_job(job.id, lambda j: j.state is JobState.SUCCEEDED)
    other = await h.enqueue("b")  # the dispatcher is still alive
    await h.wait_for_job(other.id, lambda j: j.state is JobState.SUCCEEDED)


async def test_a_job_cancelled_mid_attempt_is_not_retried(start: Start) -> None:
    sender = HangingSender()
    sender.script(URL, [Reply(status=500)])
    h = await start(sender=sender)
    await h.put_target(backoff_initial_s=0.1, backoff_max_s=0.1)
    job = await h.enqueue()
    await eventually(lambda: sender.inflight == 1)
    await h.cancel(job.id)
    sender.release.set()
    await h.wait_for_job(job.id, lambda j: j.attempts == 1)
    await asyncio.sleep(0.3)  # longer than the backoff: a retry would have happened
    assert (await h.job(job.id)).state is JobState.CANCELLED
    assert len(sender.requests) == 1


async def test_an_expired_job_fails_without_being_sent(start: Start) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.script(URL, [Reply(status=500)])
    h = await start(sender=sender, clock=clock)
    await h.put_target(max_retry_duration_s=50, backoff_initial_s=40, backoff_max_s=40)
    job = await h.enqueue()
    await h.wait_for_job(job.id, lambda j: j.state in (JobState.RETRYING, JobState.FAILED))
    h.advance(60)
    await h.store.fail_expired(clock.now())
    failed = await h.wait_for_job(job.id, lambda j: j.state is JobState.FAILED)
    assert failed.failure_reason is FailureReason.EXPIRED
    assert len(sender.requests) == 1
