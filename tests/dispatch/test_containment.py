"""Failure containment in the dispatcher: breaker, budget, adaptive limit, rate, pool share."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from app.core import breaker as br
from app.core import budget as bg
from app.core import limits
from app.core.attempt import Completion
from app.core.job import JobRecord
from app.core.target import TargetSpec
from app.dispatch.containment import TargetGuard
from app.dispatch.loop import LiveState
from app.dispatch.sender import Failure, Request, Response
from app.testing import FakeClock, FakeSender, Reply
from tests.conftest import Api, ApiFactory
from tests.dispatch.test_dispatcher import URL, eventually


async def target_state(api: Api, name: str = "billing") -> dict[str, object]:
    state: dict[str, object] = (await api.client.get(f"/targets/{name}")).json()["state"]
    return state


async def drive(api: Api, clock: FakeClock, until: Callable[[], bool], step: float = 1.0) -> None:
    """Move fake time on in steps, waking the dispatcher, until ``until`` holds."""
    for _ in range(100):
        if until():
            return
        clock.advance(step)
        api.gateway.dispatcher.wake()
        await asyncio.sleep(0.02)
    raise TimeoutError("the condition never held")


def deferred_retries(api: Api) -> float:
    value = api.gateway.metrics.registry.get_sample_value(
        "csjd_retries_deferred_total", {"target": "billing", "reason": "budget"}
    )
    return value or 0.0


def live(api: Api) -> LiveState | None:
    """The dispatcher's view of the target (None until it has read the target)."""
    return api.gateway.dispatcher.live_state("billing")


async def settle() -> None:
    """Let a wrongly eager dispatcher act (absence can only be shown by waiting)."""
    await asyncio.sleep(0.2)


async def test_an_open_breaker_sends_nothing_and_spends_no_attempts(
    api_factory: ApiFactory,
) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.default = Reply(status=500)
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target(max_concurrency=1, backoff_initial_s=1, backoff_max_s=1)
    ids = [(await api.post_job(f"k{i}")).json()["id"] for i in range(3)]
    await drive(api, clock, lambda: len(sender.requests) >= 5)
    await settle()
    assert len(sender.requests) == 5
    state = await target_state(api)
    assert state["breaker"] == "open"
    assert state["breaker_reopens_at"] is not None
    metrics = (await api.client.get("/metrics")).text
    assert 'csjd_breaker_state{target="billing"} 2.0' in metrics

    attempts_before = [(await api.client.get(f"/jobs/{i}")).json()["attempts"] for i in ids]
    clock.advance(20)  # retries come due, but the breaker is open
    api.gateway.dispatcher.wake()
    await settle()
    assert len(sender.requests) == 5
    after = [(await api.client.get(f"/jobs/{i}")).json()["attempts"] for i in ids]
    assert after == attempts_before

    sender.default = Reply(status=200)
    clock.advance(10)  # 30 s after opening: half-open, one probe
    api.gateway.dispatcher.wake()
    for job_id in ids:
        await api.wait_for_job(job_id, lambda j: j["state"] == "succeeded")
    state = await target_state(api)
    assert state["breaker"] == "closed"


class Gate(FakeSender):
    """Answers as scripted until shut; then counts concurrent requests and holds
    each until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.shut = False
        self.inflight = 0
        self.peaks: list[int] = []
        self.go = asyncio.Event()

    async def send(self, request: Request) -> Response | Failure:
        if self.shut:
            self.inflight += 1
            self.peaks.append(self.inflight)
            await self.go.wait()
            self.inflight -= 1
        return await super().send(request)


async def test_half_open_sends_one_probe_then_ramps_up_slowly(api_factory: ApiFactory) -> None:
    gate, clock = Gate(), FakeClock()
    gate.default = Reply(status=500)
    api = await api_factory(sender=gate, clock=clock)
    await api.put_target(max_concurrency=8, backoff_initial_s=0.01, backoff_max_s=0.01)
    for i in range(5):
        await api.post_job(f"trip{i}")
    await eventually(lambda: len(gate.requests) >= 5)
    await eventually(lambda: getattr(live(api), "breaker", None) == "open")
    await settle()
    tripped = len(gate.requests)

    gate.default = Reply(status=200)
    gate.shut = True
    for i in range(40):
        await api.post_job(f"q{i}")
    clock.advance(30)
    api.gateway.dispatcher.wake()
    await eventually(lambda: gate.inflight == 1)
    await settle()
    assert gate.inflight == 1, "half-open admits exactly one probe"
    assert (await target_state(api))["breaker"] == "half_open"
    gate.go.set()
    # (the requests since the gate shut)
    await eventually(lambda: len(gate.requests) - tripped >= 45 - tripped + 5)
    assert (await target_state(api))["breaker"] == "closed"
    # after the probe, concurrency restarted at 1 and at most doubled per window
    assert gate.peaks[0] == 1
    assert max(gate.peaks) <= 8


async def test_a_retry_over_budget_is_postponed_not_dropped(api_factory: ApiFactory) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.script(URL, [Reply(status=500)])
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target(backoff_initial_s=1, backoff_max_s=1)
    job = (await api.post_job()).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "retrying")
    guard = api.gateway.dispatcher._guards["billing"]
    for _ in range(bg.retries_allowed(guard.budget, clock.now())):
        guard.budget = bg.record_retry(guard.budget, clock.now())
    clock.advance(1)  # the retry is due, the budget is spent
    api.gateway.dispatcher.wake()
    await eventually(lambda: deferred_retries(api) >= 1)
    # due, but left in the queue unclaimed: no request, no attempt spent
    deferred = await api.wait_for_job(job["id"], lambda j: j["state"] == "queued")
    assert deferred["attempts"] == 1
    assert len(sender.requests) == 1
    clock.advance(11)  # the window slides; the retry goes out
    api.gateway.dispatcher.wake()
    done = await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    assert done["attempts"] == 2
    assert [r.headers["csjd-attempt"] for r in sender.requests] == ["1", "2"]


def test_a_retry_over_budget_spends_no_token_and_no_probe() -> None:
    now = 1_800_000_000.0
    spec = TargetSpec(name="billing", url=URL, rate_limit_per_s=2)
    guard = TargetGuard(spec)
    guard.reconfigure(spec, now)
    guard.breaker = br.Breaker(state=br.BreakerState.OPEN, reopens_at=now)  # half-open now
    for _ in range(guard.retry_room(now)):
        guard.budget = bg.record_retry(guard.budget, now)
    assert guard.retry_room(now) == 0
    assert guard.room(now) == 1  # the one probe

    assert not guard.start("retry", retry=True, now=now)
    guard.hold()  # while it is put back
    guard.release()
    assert guard.inflight == 0
    assert guard.room(now) == 1, "the probe is still there for an attempt that starts"
    assert guard.bucket is not None and limits.available(guard.bucket, now) == 2

    assert guard.start("first", retry=False, now=now)  # first attempts are not bounded
    assert (guard.inflight, guard.room(now)) == (1, 0)
    assert limits.available(guard.bucket, now) == 1


async def test_the_rate_limit_spaces_deliveries(api_factory: ApiFactory) -> None:
    sender, clock = FakeSender(), FakeClock()
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target(rate_limit_per_s=2)
    for i in range(6):
        await api.post_job(f"k{i}")
    await eventually(lambda: len(sender.requests) == 2)
    await settle()
    assert len(sender.requests) == 2
    clock.advance(1)
    api.gateway.dispatcher.wake()
    await eventually(lambda: len(sender.requests) == 4)
    await settle()
    assert len(sender.requests) == 4


async def test_timeouts_halve_the_adaptive_limit(api_factory: ApiFactory) -> None:
    sender = FakeSender()
    sender.default = Reply(hang=True)
    api = await api_factory(sender=sender)
    await api.put_target(max_concurrency=8, timeout_s=0.1, max_attempts=1)
    for i in range(2):
        await api.post_job(f"k{i}")
    await eventually(lambda: getattr(live(api), "concurrency_limit", None) == 2)
    state = await target_state(api)
    assert state["concurrency_limit"] == 2
    assert 'csjd_concurrency_limit{target="billing"} 2.0' in (await api.client.get("/metrics")).text


HUNG = "http://127.0.0.1:9/hung"
FINE = "http://127.0.0.1:9/fine"


class HungTarget(FakeSender):
    """Holds every request to one URL until released; answers the others at once.

    ``hung_at_others`` records, at each request to another URL, how many
    requests to the hung URL were in flight: what the hung target held then.
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.gates: list[asyncio.Future[None]] = []
        self.hung_at_others: list[int] = []

    @property
    def hung(self) -> int:
        return sum(not gate.done() for gate in self.gates)

    def to(self, url: str) -> int:
        return sum(r.url == url for r in self.requests)

    async def send(self, request: Request) -> Response | Failure:
        if request.url != self.url:
            self.hung_at_others.append(self.hung)
            return await super().send(request)
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        try:
            await gate
        finally:
            gate.cancel()  # cut off (drain): no longer counted as hung
        return await super().send(request)

    def release(self, n: int | None = None) -> None:
        for gate in [g for g in self.gates if not g.done()][:n]:
            gate.set_result(None)


async def hung_and_fine(
    api_factory: ApiFactory, clock: FakeClock | None = None
) -> tuple[Api, HungTarget]:
    sender = HungTarget(HUNG)
    api = await api_factory(sender=sender, clock=clock, max_inflight=8)
    # a limit far above the pool: only the share keeps it from taking everything
    await api.put_target("hung", url=HUNG, max_concurrency=100, timeout_s=300)
    await api.put_target("fine", url=FINE, max_concurrency=16)
    return api, sender


async def test_a_hung_target_holds_at_most_its_share_while_another_has_due_work(
    api_factory: ApiFactory,
) -> None:
    clock = FakeClock()
    api, sender = await hung_and_fine(api_factory, clock)
    try:
        # both targets' jobs come due at the same moment
        for i in range(30):
            await api.post_job(f"h{i}", {"target": "hung", "payload": i, "delay_s": 5})
            await api.post_job(f"f{i}", {"target": "fine", "payload": i, "delay_s": 5})
        clock.advance(5)
        api.gateway.dispatcher.wake()
        await eventually(lambda: sender.to(FINE) == 30)
        assert max(sender.hung_at_others) <= 4, "the hung target took more than half the pool"
        # nobody else has work now: the hung target may use the whole pool
        await eventually(lambda: sender.hung == 8)
    finally:
        sender.release()


async def test_slots_a_hung_target_gives_up_go_to_targets_with_due_work(
    api_factory: ApiFactory,
) -> None:
    api, sender = await hung_and_fine(api_factory)
    try:
        for i in range(30):
            await api.post_job(f"h{i}", {"target": "hung", "payload": i})
        await eventually(lambda: sender.hung == 8)  # alone, it may use the whole pool
        for i in range(30):
            await api.post_job(f"f{i}", {"target": "fine", "payload": i})
        await settle()
        assert sender.to(FINE) == 0  # nothing is free yet: in-flight work is not cut off
        sender.release(4)  # four of its attempts end; its other jobs are still due
        await eventually(lambda: sender.to(FINE) == 30)
        assert max(sender.hung_at_others) <= 4, "the hung target took back the slots it gave up"
        await eventually(lambda: sender.hung == 8)
    finally:
        sender.release()


async def test_retries_over_budget_are_left_unclaimed_and_spend_nothing(
    api_factory: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the breaker never opens, and the budget's floor is 5 retries per 10 s, so
    # the budget alone holds back a target that fails every request
    monkeypatch.setattr(br, "CONSECUTIVE_FAILURES", 10**9)
    monkeypatch.setattr(br, "FAILURE_RATIO", 2.0)
    monkeypatch.setattr(bg, "FLOOR_PER_S", 0.5)
    tokens = Counter[str]()
    take = limits.take

    def counted_take(b: limits.Bucket, n: int, now: float) -> limits.Bucket:
        tokens["taken"] += n
        return take(b, n, now)

    monkeypatch.setattr(limits, "take", counted_take)
    sender, clock = FakeSender(), FakeClock()
    sender.default = Reply(status=500)
    api = await api_factory(sender=sender, clock=clock)
    store = api.gateway.store
    complete = store.complete
    put_back: list[Completion] = []

    async def recording_complete(completion: Completion) -> bool:
        if not completion.sent:
            put_back.append(completion)
        written: bool = await complete(completion)
        return written

    monkeypatch.setattr(store, "complete", recording_complete)
    claims = Counter[str]()
    claim = store.claim

    async def counted_claim(*args: Any, **kwargs: Any) -> list[JobRecord]:
        claims["n"] += 1
        jobs: list[JobRecord] = await claim(*args, **kwargs)
        return jobs

    monkeypatch.setattr(store, "claim", counted_claim)
    # a rate limit that never binds: only to see whether put-backs spend tokens
    await api.put_target(
        backoff_initial_s=1, backoff_max_s=1, max_attempts=1000, rate_limit_per_s=1000
    )
    ids = [(await api.post_job(f"k{i}")).json()["id"] for i in range(20)]
    await eventually(lambda: len(sender.requests) == 20)
    for _ in range(30):  # 30 s of retries due every second
        await step(api, clock, claims)
    retries = len(sender.requests) - 20
    # within budget, and using it: 20 % of the 20 first attempts plus the floor
    # of 5 in the first 10 s, then 5 in each 10 s after
    assert 9 + 5 <= retries <= 9 + 5 + 5 + 5
    assert put_back == [], "retries were claimed only to be put back"
    assert tokens["taken"] == len(sender.requests), "tokens were spent on requests never sent"
    sender.default = Reply(status=200)  # postponed, never dropped
    sent_before = len(sender.requests)

    def all_sent_again() -> bool:
        return len({r.headers["webhook-id"] for r in sender.requests[sent_before:]}) == 20

    for _ in range(20):
        if all_sent_again():
            break
        await step(api, clock, claims, seconds=10)
    assert all_sent_again()
    for job_id in ids:
        await api.wait_for_job(job_id, lambda j: j["state"] == "succeeded")
    sent = Counter(r.headers["webhook-id"] for r in sender.requests)
    for job_id in ids:
        attempts = (await api.client.get(f"/jobs/{job_id}/attempts")).json()
        assert [a["n"] for a in attempts] == list(range(1, sent[job_id] + 1))
    assert put_back == []


async def step(api: Api, clock: FakeClock, claims: Counter[str], seconds: float = 1) -> None:
    """Move fake time on; wait until the dispatcher has claimed and delivered at the new time."""
    dispatcher = api.gateway.dispatcher
    before = claims["n"]
    clock.advance(seconds)
    dispatcher.wake()
    await eventually(
        lambda: claims["n"] > before and not dispatcher._tasks and not dispatcher._wake.is_set()
    )
