"""The dispatcher behind the sender seam: a fake sender, a fake clock, real SQLite."""

from __future__ import annotations

import asyncio
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.core.signing import sign
from app.dispatch import loop as dispatcher_module
from app.dispatch.sender import AiohttpSender, Request
from app.testing import FakeClock, FakeSender, Reply, Sink
from tests.conftest import Api, ApiFactory

URL = "http://127.0.0.1:9/hook"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW_SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


async def eventually(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        await asyncio.sleep(0.005)


class HangingSender(FakeSender):
    """Holds every request until released; counts how many are in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.inflight = 0
        self.peak = 0
        self.by_url: dict[str, int] = {}

    async def send(self, request: Request):
        self.inflight += 1
        self.by_url[request.url] = self.by_url.get(request.url, 0) + 1
        self.peak = max(self.peak, self.inflight)
        try:
            await self.release.wait()
            return await super().send(request)
        finally:
            self.inflight -= 1
            self.by_url[request.url] -= 1


async def test_the_delivery_request_is_exactly_what_the_contract_says(
    api_factory: ApiFactory,
) -> None:
    sender = FakeSender()
    clock = FakeClock()
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target(secret=SECRET, headers={"X-Tenant": "acme", "X-Both": "target"})
    job = (
        await api.post_job(
            "k",
            {
                "target": "billing",
                "payload": {"b": 1, "a": [1, 2]},
                "headers": {"X-Job": "j", "x-both": "job"},
            },
        )
    ).json()
    await eventually(lambda: len(sender.requests) == 1)
    request = sender.requests[0]
    assert request.url == URL
    assert request.body == b'{"b":1,"a":[1,2]}'
    assert request.timeout_s == 10.0
    ts = int(clock.now())
    assert list(request.headers.items()) == [
        ("content-type", "application/json"),
        ("user-agent", "csjd/0.1.0"),
        ("webhook-id", job["id"]),
        ("webhook-timestamp", str(ts)),
        ("webhook-signature", sign(SECRET, job["id"], ts, request.body)),
        ("idempotency-key", job["id"]),
        ("csjd-attempt", "1"),
        ("X-Tenant", "acme"),
        ("X-Job", "j"),
        ("x-both", "job"),
    ]


@pytest.mark.parametrize("secrets", [[SECRET], [NEW_SECRET, SECRET]], ids=["one", "rotating"])
async def test_a_real_delivery_verifies_with_the_reference_verifier_under_each_secret(
    api_factory: ApiFactory, secrets: list[str]
) -> None:
    with Sink() as sink:
        api = await api_factory(sender=AiohttpSender(max_connections=4, allow_private=True))
        await api.put_target(url=sink.url("/hook"), secret=" ".join(secrets))
        job = (await api.post_job()).json()
        await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
        (got,) = sink.received("/hook")
    assert len(got.headers["webhook-signature"].split(" ")) == len(secrets)
    for secret in secrets:
        # during a rotation, consumers still on the old secret keep verifying
        assert Webhook(secret).verify(got.body, got.headers) == {"n": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)


async def test_unsigned_when_the_target_has_no_secret(api: Api, sender: FakeSender) -> None:
    await api.put_target()
    await api.post_job()
    await eventually(lambda: len(sender.requests) == 1)
    assert "webhook-signature" not in sender.requests[0].headers


async def test_retries_wait_for_their_backoff_and_count_every_request(
    api_factory: ApiFactory,
) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.script(URL, [Reply(status=503), Reply(status=502)])
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target(backoff_initial_s=100, backoff_max_s=100)
    job = (await api.post_job()).json()
    await eventually(lambda: len(sender.requests) == 1)
    waiting = await api.wait_for_job(job["id"], lambda j: j["state"] == "retrying")
    assert waiting["attempts"] == 1 and waiting["last_error"] == "HTTP 503"
    clock.advance(100)  # past any jittered delay within the 100 s cap
    api.gateway.dispatcher.wake()
    await eventually(lambda: len(sender.requests) == 2)
    clock.advance(100)
    api.gateway.dispatcher.wake()
    done = await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    assert done["attempts"] == 3
    assert [r.headers["csjd-attempt"] for r in sender.requests] == ["1", "2", "3"]
    assert {r.headers["webhook-id"] for r in sender.requests} == {job["id"]}


async def test_throttling_pauses_the_whole_target_without_spending_attempts(
    api_factory: ApiFactory,
) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.script(URL, [Reply(status=429, headers={"Retry-After": "30"})])
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target(max_concurrency=1)
    first = (await api.post_job("a")).json()
    second = (await api.post_job("b")).json()
    await eventually(lambda: len(sender.requests) >= 1)
    paused = await api.wait_for_job(first["id"], lambda j: j["state"] == "retrying")
    assert paused["attempts"] == 0 and paused["last_status_code"] == 429
    target = (await api.client.get("/targets/billing")).json()
    assert target["state"]["paused_until"] is not None
    # nothing goes to the paused target, not even the other job
    api.gateway.dispatcher.wake()
    await asyncio.sleep(0.2)  # give a wrongly eager dispatcher the chance to send
    assert len(sender.requests) == 1
    clock.advance(30)
    api.gateway.dispatcher.wake()
    for job in (first, second):
        done = await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
        assert done["attempts"] == 1
    attempts = (await api.client.get(f"/jobs/{first['id']}/attempts")).json()
    assert [a["outcome"] for a in attempts] == ["throttled", "success"]


async def test_503_with_retry_after_throttles_but_without_it_retries(
    api_factory: ApiFactory,
) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.script(URL, [Reply(status=503, headers={"Retry-After": "5"}), Reply(status=503)])
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target()
    job = (await api.post_job()).json()
    throttled = await api.wait_for_job(job["id"], lambda j: j["last_status_code"] == 503)
    assert throttled["attempts"] == 0
    clock.advance(5)
    api.gateway.dispatcher.wake()
    retried = await api.wait_for_job(job["id"], lambda j: j["attempts"] == 1)
    assert retried["state"] == "retrying"


async def test_gone_fails_the_job_and_disables_the_target(api: Api, sender: FakeSender) -> None:
    sender.script(URL, [Reply(status=410)])
    await api.put_target(max_concurrency=1)
    first = (await api.post_job("a")).json()
    failed = await api.wait_for_job(first["id"], lambda j: j["state"] == "failed")
    assert failed["failure_reason"] == "target_gone"
    target = (await api.client.get("/targets/billing")).json()
    assert target["enabled"] is False
    assert "410" in target["state"]["disabled_reason"]
    second = (await api.post_job("b")).json()
    await asyncio.sleep(0.2)  # a disabled target must not be sent anything
    assert len(sender.requests) == 1
    assert (await api.client.get(f"/jobs/{second['id']}")).json()["state"] == "queued"
    await api.put_target(max_concurrency=1, enabled=True)
    await api.wait_for_job(second["id"], lambda j: j["state"] == "succeeded")


async def test_concurrency_is_bounded_per_target_and_overall(api_factory: ApiFactory) -> None:
    sender = HangingSender()
    api = await api_factory(sender=sender, max_inflight=5)
    await api.put_target("slow", url="http://127.0.0.1:9/slow", max_concurrency=3)
    await api.put_target("other", url="http://127.0.0.1:9/other", max_concurrency=10)
    for i in range(10):
        await api.post_job(f"s{i}", {"target": "slow", "payload": i})
        await api.post_job(f"o{i}", {"target": "other", "payload": i})
    await eventually(lambda: sender.inflight == 5)
    await asyncio.sleep(0.1)  # no more may start while all slots are taken
    assert sender.inflight == 5
    assert sender.by_url["http://127.0.0.1:9/slow"] <= 3
    assert sender.by_url["http://127.0.0.1:9/other"] >= 2  # the slow one did not take it all
    sender.release.set()
    await eventually(lambda: len(sender.requests) == 20)
    assert sender.peak == 5


async def test_an_exception_inside_a_delivery_is_a_retryable_attempt(
    api_factory: ApiFactory,
) -> None:
    class Exploding(FakeSender):
        calls = 0

        async def send(self, request: Request):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("sender bug")
            return await super().send(request)

    sender, clock = Exploding(), FakeClock()
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target()
    job = (await api.post_job("a")).json()
    failed_once = await api.wait_for_job(job["id"], lambda j: j["attempts"] == 1)
    # the exception is logged; the producer reads only that csjd failed
    assert failed_once["last_error"] == "internal error in csjd"
    clock.advance(2)
    api.gateway.dispatcher.wake()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    other = (await api.post_job("b")).json()  # the dispatcher is still alive
    await api.wait_for_job(other["id"], lambda j: j["state"] == "succeeded")


async def test_a_new_job_wakes_the_dispatcher_instead_of_waiting_for_a_poll(
    api: Api, sender: FakeSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.put_target()
    api.gateway.dispatcher._idle_poll_s = 3600.0
    await api.post_job("warm")  # the loop now sleeps with the long poll
    await eventually(lambda: len(sender.requests) == 1)
    job = (await api.post_job("k")).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded", timeout=5)


async def test_a_job_cancelled_mid_attempt_is_not_retried(api_factory: ApiFactory) -> None:
    sender = HangingSender()
    sender.script(URL, [Reply(status=500)])
    api = await api_factory(sender=sender)
    await api.put_target(backoff_initial_s=0.1, backoff_max_s=0.1)
    job = (await api.post_job()).json()
    await eventually(lambda: sender.inflight == 1)
    assert (await api.client.post(f"/jobs/{job['id']}/cancel")).status_code == 200
    sender.release.set()
    await api.wait_for_job(job["id"], lambda j: j["attempts"] == 1)
    await asyncio.sleep(0.3)  # longer than the backoff: a retry would have happened
    final = (await api.client.get(f"/jobs/{job['id']}")).json()
    assert final["state"] == "cancelled" and len(sender.requests) == 1


async def test_drain_puts_unfinished_attempts_back_without_counting(
    api_factory: ApiFactory,
) -> None:
    sender = HangingSender()
    api = await api_factory(sender=sender, drain_timeout_s=0.2)
    await api.put_target()
    job = (await api.post_job()).json()
    await eventually(lambda: sender.inflight == 1)
    await api.gateway.dispatcher.stop(drain_timeout_s=0.2)
    back = (await api.client.get(f"/jobs/{job['id']}")).json()
    assert (back["state"], back["attempts"]) == ("queued", 0)
    attempts = (await api.client.get(f"/jobs/{job['id']}/attempts")).json()
    assert [a["outcome"] for a in attempts] == ["interrupted"]


async def test_the_drain_runs_once_on_the_clock_of_the_first_stop(
    api_factory: ApiFactory,
) -> None:
    """serve begins the drain when the listener closes; the lifespan's stop later
    waits for that one instead of granting the deliveries a second drain."""
    sender = HangingSender()
    api = await api_factory(sender=sender)
    await api.put_target()
    job = (await api.post_job()).json()
    await eventually(lambda: sender.inflight == 1)
    started = time.monotonic()
    api.gateway.dispatcher.begin_stop(0.2)
    async with asyncio.timeout(5):  # far less than the 60 s this call would grant
        await api.gateway.dispatcher.stop(drain_timeout_s=60)
    assert time.monotonic() - started < 5
    back = (await api.client.get(f"/jobs/{job['id']}")).json()
    assert (back["state"], back["attempts"]) == ("queued", 0)


async def test_an_expired_job_fails_without_being_sent(api_factory: ApiFactory) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.script(URL, [Reply(status=500)])
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target(max_retry_duration_s=50, backoff_initial_s=40, backoff_max_s=40)
    job = (await api.post_job()).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] in ("retrying", "failed"))
    clock.advance(60)
    api.gateway.dispatcher.wake()
    await api.gateway.store.fail_expired(clock.now())
    failed = await api.wait_for_job(job["id"], lambda j: j["state"] == "failed")
    assert failed["failure_reason"] == "expired"
    assert len(sender.requests) == 1


async def test_a_long_attempt_keeps_its_lease_alive(
    api_factory: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "HEARTBEAT_S", 0.05)
    sender, clock = HangingSender(), FakeClock()
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target(timeout_s=300)
    job = (await api.post_job()).json()
    await eventually(lambda: sender.inflight == 1)
    first = await api.gateway.store.get_job("", job["id"])
    clock.advance(100)  # far past the 30 s lease the claim gave it

    async def lease_now() -> float:
        current = await api.gateway.store.get_job("", job["id"])
        return current.lease_expires_at or 0.0

    deadline = time.monotonic() + 5
    while await lease_now() <= first.lease_expires_at:
        assert time.monotonic() < deadline, "the lease was never extended"
        await asyncio.sleep(0.01)
    assert await lease_now() == pytest.approx(clock.now() + 30)
    sender.release.set()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
