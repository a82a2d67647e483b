"""Failure containment in the dispatcher: breaker, budget, adaptive limit, rate, pool share."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from app.core import breaker as br
from app.core import budget as bg
from app.core import limits
from app.core.attempt import Completion
from app.core.job import JobState
from app.core.request import Request
from app.core.target import TargetSpec
from app.dispatch.containment import Containment, TargetGuard
from app.dispatch.sender import Failure, Response
from app.storage.base import ClaimRequest, ClaimRound, JobStore
from app.testing import FakeClock, FakeSender, Reply
from tests.dispatch.conftest import Start
from tests.dispatch.harness import URL, Harness, eventually


async def drive(h: Harness, until: Callable[[], bool], step: float = 1.0) -> None:
    """Move fake time on in steps, waking the dispatcher, until ``until`` holds."""
    for _ in range(100):
        if until():
            return
        h.advance(step)
        await asyncio.sleep(0.02)
    raise TimeoutError("the condition never held")


def deferred_retries(h: Harness) -> float:
    return h.sample("csjd_retries_deferred_total", target="billing", reason="budget") or 0.0


def breaker(h: Harness) -> str | None:
    live = h.live()
    return live.breaker if live else None


async def settle() -> None:
    """Let a wrongly eager dispatcher act (absence can only be shown by waiting)."""
    await asyncio.sleep(0.2)


async def attempts_of(h: Harness, ids: list[str]) -> list[int]:
    return [(await h.job(job_id)).attempts for job_id in ids]


async def test_an_open_breaker_sends_nothing_and_spends_no_attempts(start: Start) -> None:
    sender = FakeSender()
    sender.default = Reply(status=500)
    h = await start(sender=sender, clock=FakeClock())
    await h.put_target(max_concurrency=1, backoff_initial_s=1, backoff_max_s=1)
    ids = [(await h.enqueue(f"k{i}")).id for i in range(3)]
    await drive(h, lambda: len(sender.requests) >= 5)
    await settle()
    assert len(sender.requests) == 5
    live = h.live()
    assert live is not None and live.breaker == "open"
    assert live.breaker_reopens_at is not None
    assert h.sample("csjd_breaker_state", target="billing") == 2.0

    attempts_before = await attempts_of(h, ids)
    h.advance(20)  # retries come due, but the breaker is open
    await settle()
    assert len(sender.requests) == 5
    assert await attempts_of(h, ids) == attempts_before

    sender.default = Reply(status=200)
    h.advance(10)  # 30 s after opening: half-open, one probe
    for job_id in ids:
        await h.wait_for_job(job_id, lambda j: j.state is JobState.SUCCEEDED)
    assert breaker(h) == "closed"


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


async def test_half_open_sends_one_probe_then_ramps_up_slowly(start: Start) -> None:
    gate = Gate()
    gate.default = Reply(status=500)
    h = await start(sender=gate, clock=FakeClock())
    await h.put_target(max_concurrency=8, backoff_initial_s=0.01, backoff_max_s=0.01)
    for i in range(5):
        await h.enqueue(f"trip{i}")
    await eventually(lambda: len(gate.requests) >= 5)
    await eventually(lambda: breaker(h) == "open")
    await settle()
    tripped = len(gate.requests)

    gate.default = Reply(status=200)
    gate.shut = True
    for i in range(40):
        await h.enqueue(f"q{i}")
    h.advance(30)
    await eventually(lambda: gate.inflight == 1)
    await settle()
    assert gate.inflight == 1, "half-open admits exactly one probe"
    assert breaker(h) == "half_open"
    gate.go.set()
    # (the requests since the gate shut)
    await eventually(lambda: len(gate.requests) - tripped >= 45 - tripped + 5)
    assert breaker(h) == "closed"
    # after the probe, concurrency restarted at 1 and at most doubled per window
    assert gate.peaks[0] == 1
    assert max(gate.peaks) <= 8


async def test_a_retry_over_budget_is_postponed_not_dropped(start: Start) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.script(URL, [Reply(status=500)])
    h = await start(sender=sender, clock=clock)
    await h.put_target(backoff_initial_s=1, backoff_max_s=1)
    job = await h.enqueue()
    await h.wait_for_job(job.id, lambda j: j.state is JobState.RETRYING)
    # spend the budget as other retries would have
    guard = h.dispatcher._guards["billing"]
    for _ in range(bg.retries_allowed(guard.budget, clock.now())):
        guard.budget = bg.record_retry(guard.budget, clock.now())
    h.advance(1)  # the retry is due, the budget is spent
    await eventually(lambda: deferred_retries(h) >= 1)
    # due, but left in the queue unclaimed: no request, no attempt spent
    deferred = await h.wait_for_job(job.id, lambda j: j.state is JobState.QUEUED)
    assert deferred.attempts == 1
    assert len(sender.requests) == 1
    h.advance(11)  # the window slides; the retry goes out
    done = await h.wait_for_job(job.id, lambda j: j.state is JobState.SUCCEEDED)
    assert done.attempts == 2
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


async def test_the_rate_limit_spaces_deliveries(start: Start) -> None:
    sender = FakeSender()
    h = await start(sender=sender, clock=FakeClock())
    await h.put_target(rate_limit_per_s=2)
    for i in range(6):
        await h.enqueue(f"k{i}")
    await eventually(lambda: len(sender.requests) == 2)
    await settle()
    assert len(sender.requests) == 2
    h.advance(1)
    await eventually(lambda: len(sender.requests) == 4)
    await settle()
    assert len(sender.requests) == 4


async def test_timeouts_halve_the_adaptive_limit(start: Start) -> None:
    sender = FakeSender()
    sender.default = Reply(hang=True)
    h = await start(sender=sender)
    await h.put_target(max_concurrency=8, timeout_s=0.1, max_attempts=1)
    for i in range(2):
        await h.enqueue(f"k{i}")
    await eventually(lambda: getattr(h.live(), "concurrency_limit", None) == 2)
    assert h.sample("csjd_concurrency_limit", target="billing") == 2.0


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


async def hung_and_fine(start: Start, clock: FakeClock | None = None) -> tuple[Harness, HungTarget]:
    sender = HungTarget(HUNG)
    h = await start(sender=sender, clock=clock, max_inflight=8)
    # a limit far above the pool: only the share keeps it from taking everything
    await h.put_target("hung", url=HUNG, max_concurrency=100, timeout_s=300)
    await h.put_target("fine", url=FINE, max_concurrency=16)
    return h, sender


async def test_a_hung_target_holds_at_most_its_share_while_another_has_due_work(
    start: Start,
) -> None:
    h, sender = await hung_and_fine(start, FakeClock())
    try:
        # both targets' jobs come due at the same moment
        for i in range(30):
            await h.enqueue(f"h{i}", target="hung", payload=str(i).encode(), delay_s=5)
            await h.enqueue(f"f{i}", target="fine", payload=str(i).encode(), delay_s=5)
        h.advance(5)
        await eventually(lambda: sender.to(FINE) == 30)
        assert max(sender.hung_at_others) <= 4, "the hung target took more than half the pool"
        # nobody else has work now: the hung target may use the whole pool
        await eventually(lambda: sender.hung == 8)
    finally:
        sender.release()


async def test_slots_a_hung_target_gives_up_go_to_targets_with_due_work(start: Start) -> None:
    h, sender = await hung_and_fine(start)
    try:
        for i in range(30):
            await h.enqueue(f"h{i}", target="hung", payload=str(i).encode())
        await eventually(lambda: sender.hung == 8)  # alone, it may use the whole pool
        for i in range(30):
            await h.enqueue(f"f{i}", target="fine", payload=str(i).encode())
        await settle()
        assert sender.to(FINE) == 0  # nothing is free yet: in-flight work is not cut off
        sender.release(4)  # four of its attempts end; its other jobs are still due
        await eventually(lambda: sender.to(FINE) == 30)
        assert max(sender.hung_at_others) <= 4, "the hung target took back the slots it gave up"
        await eventually(lambda: sender.hung == 8)
    finally:
        sender.release()


class Recording:
    """The store, noting the time of each claim and keeping every completion that
    puts a job back unsent."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        #: the ``now`` of each claim that has returned
        self.claimed_at: list[float] = []
        self.put_back: list[Completion] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_round(
        self, requests: Sequence[ClaimRequest], now: float, lease_s: Mapping[str, float]
    ) -> ClaimRound:
        claimed: ClaimRound = await self._store.claim_round(requests, now, lease_s)
        # noted once it returns: the loop admits what it claimed before it
        # yields again, so a test that sees the note sees those attempts started
        self.claimed_at.append(now)
        return claimed

    async def complete(self, completion: Completion) -> bool:
        if not completion.sent:
            self.put_back.append(completion)
        written: bool = await self._store.complete(completion)
        return written


#: the breaker never opens, and the budget's floor is 5 retries per 10 s, so
#: the budget alone holds back a target that fails every request
BUDGET_ALONE = Containment(
    breaker=br.Policy(consecutive_failures=10**9, failure_ratio=2.0),
    budget=bg.Policy(floor_per_s=0.5),
)


async def test_retries_over_budget_are_left_unclaimed_and_spend_nothing(
    start: Start, store: JobStore
) -> None:
    recording = Recording(store)
    sender = FakeSender()
    sender.default = Reply(status=500)
    h = await start(sender=sender, clock=FakeClock(), over=recording, containment=BUDGET_ALONE)
    # a rate limit that never binds: only to see whether put-backs spend tokens
    await h.put_target(
        backoff_initial_s=1, backoff_max_s=1, max_attempts=1000, rate_limit_per_s=1000
    )
    ids = [(await h.enqueue(f"k{i}")).id for i in range(20)]
    await eventually(lambda: len(sender.requests) == 20)
    tokens = Counter({"taken": tokens_taken_now(h)})
    for _ in range(30):  # 30 s of retries due every second
        await step(h, recording, tokens)
    retries = len(sender.requests) - 20
    # within budget, and using it: 20 % of the 20 first attempts plus the floor
    # of 5 in the first 10 s, then 5 in each 10 s after
    assert 9 + 5 <= retries <= 9 + 5 + 5 + 5
    assert recording.put_back == [], "retries were claimed only to be put back"
    assert tokens["taken"] == len(sender.requests), "tokens were spent on requests never sent"
    sender.default = Reply(status=200)  # postponed, never dropped
    sent_before = len(sender.requests)

    def all_sent_again() -> bool:
        return len({r.headers["webhook-id"] for r in sender.requests[sent_before:]}) == 20

    for _ in range(20):
        if all_sent_again():
            break
        await step(h, recording, tokens, seconds=10)
    assert all_sent_again()
    for job_id in ids:
        await h.wait_for_job(job_id, lambda j: j.state is JobState.SUCCEEDED)
    sent = Counter(r.headers["webhook-id"] for r in sender.requests)
    for job_id in ids:
        assert [a.delivery for a in await h.attempts(job_id)] == list(range(1, sent[job_id] + 1))
    assert recording.put_back == []


def tokens_taken_now(h: Harness) -> int:
    """The rate tokens taken at the fake clock's present moment: within a second
    the bucket (1000 a second) refills to its burst, and the clock stands still
    while a step runs, so what it lacks now is what this step's attempts took."""
    bucket = h.dispatcher._guards["billing"].bucket
    assert bucket is not None
    return round(bucket.burst - limits.refill(bucket, h.clock.now()).tokens)


async def step(h: Harness, recording: Recording, tokens: Counter[str], seconds: float = 1) -> None:
    """Move fake time on; wait until the dispatcher has claimed and delivered at the new time.

    (A claim of the old time may still be under way when the clock moves: only
    one made at the new time says the loop has looked at it.)"""
    loop = h.dispatcher
    h.advance(seconds)
    now = h.clock.now()
    await eventually(
        lambda: now in recording.claimed_at and not loop._tasks and not loop._wake.is_set()
    )
    tokens["taken"] += tokens_taken_now(h)
