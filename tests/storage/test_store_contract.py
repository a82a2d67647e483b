"""The storage contract: one class of tests, run against every backend.

Every test here speaks to the store through its public methods only, so one
class holds ``MemoryJobStore`` and ``SqlJobStore`` on SQLite and on Postgres
to the same behaviour, each on a fresh database. What only the SQL store has
(its constraints, its engine, group commit, the file lock) is tested in
``test_sql_store.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest

from app.core import errors
from app.core.attempt import AttemptRecord, Completion
from app.core.ids import uuid7
from app.core.job import (
    _TRANSITIONS,
    ACTIVE,
    Enqueued,
    Event,
    FailureReason,
    IllegalTransition,
    JobRecord,
    JobState,
    NewJob,
    transition,
)
from app.core.outcome import Outcome
from app.core.retry import Decision
from app.core.target import TargetSpec
from app.settings import Settings
from app.storage.base import ATTEMPTS_PAGE, Activity, ClaimRequest, JobFilter
from app.storage.factory import build_store
from app.storage.memory import MemoryJobStore
from app.storage.sql import SqlJobStore

NOW = 1_800_000_000.0

Store = MemoryJobStore | SqlJobStore
OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """A fresh, migrated database of each SQL backend; None for the memory store."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("db_url")
        return url
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres").fresh())
    return None


@pytest.fixture
async def open_store(database_url: str | None) -> AsyncIterator[OpenStore]:
    """Opens stores of one backend, all on one database; closes them after the test."""
    opened: list[Store] = []

    async def open_(*, max_backlog: int = 1000) -> Store:
        s: Store = (
            MemoryJobStore(max_backlog=max_backlog)
            if database_url is None
            else build_store(Settings(database_url=database_url, max_backlog=max_backlog))
        )
        await s.open()
        opened.append(s)
        return s

    yield open_
    for s in reversed(opened):
        await s.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    s = await open_store()
    await s.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
    return s


def new_job(
    key: str = "k", *, fingerprint: str = "f", target: str = "billing", **kw: object
) -> NewJob:
    values: dict[str, object] = {
        "id": uuid7(),
        "caller": "",
        "idempotency_key": key,
        "fingerprint": fingerprint,
        "target": target,
        "payload": b'{"n":1}',
        "headers": None,
        "max_attempts": None,
        "next_attempt_at": NOW,
        "expires_at": None,
        "created_at": NOW,
    }
    values.update(kw)
    return NewJob(**values)  # type: ignore[arg-type]


def attempt(n: int, outcome: Outcome = Outcome.SUCCESS, status: int | None = 200) -> AttemptRecord:
    return AttemptRecord(
        delivery=n,
        started_at=NOW,
        finished_at=NOW + 0.01,
        duration_ms=10.0,
        status_code=status,
        outcome=outcome,
        error=None,
        response_excerpt="ok",
    )


SECRET = "whsec_" + base64.b64encode(b"a secret that no log may ever show").decode()
HEADER_VALUE = "Bearer a header value that no log may show"


async def sent_once(store: Store, key: str, due: float, *, sent: bool = True) -> str:
    """A job whose claim went back (``sent``: after one request) to wait until ``due``."""
    job = (await store.enqueue(new_job(key, next_attempt_at=due - 100))).job
    [claimed] = await store.claim(
        [ClaimRequest(target="billing", limit=1)], due - 100, {"billing": 1}
    )
    assert claimed.id == job.id
    back = Decision(state=JobState.RETRYING, attempts=int(sent), next_attempt_at=due)
    written = await store.complete(
        Completion(
            job_id=job.id,
            target="billing",
            delivery=claimed.delivery,
            decision=back,
            attempt=attempt(1, Outcome.RETRYABLE, 500) if sent else None,
            now=due - 100,
            sent=sent,
        )
    )
    assert written
    return job.id


async def _attempted(store: Store, times: int) -> str:
    """A job with ``times`` attempts, each a retryable failure that makes it due again."""
    job = (await store.enqueue(new_job("paged"))).job
    for _ in range(times):
        [claimed] = await store.claim(
            [ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1}
        )
        again = Decision(
            state=JobState.RETRYING, attempts=claimed.attempts + 1, next_attempt_at=NOW
        )
        completion = Completion(
            job_id=job.id,
            target="billing",
            delivery=claimed.delivery,
            decision=again,
            attempt=attempt(claimed.delivery, Outcome.RETRYABLE, 503),
            now=NOW,
        )
        assert await store.complete(completion)
    return job.id


async def running(store: Store, key: str = "k", *, lease_s: float = 30, **kw: object) -> JobRecord:
    """A new job, claimed at ``NOW``: its attempt is running under a lease of ``lease_s``.
    It was due a second before, so no job that came due at ``NOW`` is claimed first."""
    job = (await store.enqueue(new_job(key, **{"next_attempt_at": NOW - 1, **kw}))).job
    [claimed] = await store.claim(
        [ClaimRequest(target=job.target, limit=1)], NOW, {job.target: lease_s}
    )
    assert claimed.id == job.id
    return claimed


def result(
    job: JobRecord,
    decision: Decision,
    *,
    at: float = NOW + 1,
    status: int | None = 200,
    sent: bool = True,
    lapsed_before: float | None = None,
) -> Completion:
    """The result of ``job``'s running attempt (``status`` None: no request was recorded)."""
    outcome = Outcome.SUCCESS if decision.state is JobState.SUCCEEDED else Outcome.RETRYABLE
    return Completion(
        job_id=job.id,
        target=job.target,
        delivery=job.delivery,
        decision=decision,
        attempt=None if status is None else attempt(job.delivery, outcome, status),
        now=at,
        sent=sent,
        lapsed_before=lapsed_before,
    )


SUCCEEDED = Decision(state=JobState.SUCCEEDED, attempts=1, next_attempt_at=None)


# -- the diagram of app/core/job.py, read from its table ----------------------

EDGES = sorted(_TRANSITIONS)
NON_EDGES = [(s, e) for s in JobState for e in Event if (s, e) not in _TRANSITIONS]
#: what an attempt's result says to each event that moves a running job
RESULTS = {
    Event.SUCCEEDED: SUCCEEDED,
    Event.RETRY: Decision(state=JobState.RETRYING, attempts=1, next_attempt_at=NOW + 60),
    # a drain: the attempt is not counted, and the job goes straight back
    Event.REQUEUE: Decision(state=JobState.QUEUED, attempts=0, next_attempt_at=NOW + 1),
    Event.FAILED: Decision(
        state=JobState.FAILED,
        attempts=1,
        next_attempt_at=None,
        failure_reason=FailureReason.PERMANENT_STATUS,
    ),
}


async def job_in(store: Store, state: JobState) -> JobRecord:
    """A job brought into ``state`` through the store's public methods: due (if it
    waits) at ``NOW + 60``, expiring at ``NOW + 100``."""
    if state in (JobState.SCHEDULED, JobState.QUEUED, JobState.CANCELLED):
        due = NOW + 60 if state is JobState.SCHEDULED else NOW
        job = (await store.enqueue(new_job(next_attempt_at=due, expires_at=NOW + 100))).job
        if state is JobState.CANCELLED:
            await store.cancel("", job.id, NOW)
    elif state in (JobState.RUNNING, JobState.RETRYING, JobState.SUCCEEDED, JobState.FAILED):
        job = await running(store, expires_at=NOW + 100)
        if state is not JobState.RUNNING:
            decision = next(d for d in RESULTS.values() if d.state is state)
            assert await store.complete(result(job, decision))
    else:
        pytest.fail(f"no way into a {state} job through the store yet")
    stored = await store.get_job("", job.id)
    assert stored is not None and stored.state is state
    return stored


async def take(store: Store, job: JobRecord, event: Event) -> None:
    """``event`` happening to ``job`` through the store, at a time it could happen."""
    if event is Event.DUE:
        await store.claim([], NOW + 60, {})  # every claim round brings due jobs to the queue
    elif event is Event.CLAIMED:
        await store.claim([ClaimRequest(target="billing", limit=1)], NOW + 1, {"billing": 30})
    elif event in (Event.SUCCEEDED, Event.RETRY, Event.REQUEUE):
        await store.complete(result(job, RESULTS[event]))
    elif event is Event.FAILED:
        # a running job fails by its attempt's result, a waiting one by expiring
        await store.complete(result(job, RESULTS[event]))
        await store.fail_expired(NOW + 100)
    elif event is Event.CANCEL:
        await store.cancel("", job.id, NOW + 1)
    elif event is Event.OPERATOR_RETRY:
        await store.retry("", job.id, NOW + 1)
    else:
        pytest.fail(f"no way to make '{event}' happen through the store yet")


async def assert_counts_exact(store: Store) -> None:
    """The backlog the writes kept is the jobs' own: each target's unfinished jobs
    by state, as counted one by one, and the store's own recount finds nothing off."""
    counted: dict[str, dict[str, int]] = {}
    for target in await store.list_targets():
        for state in sorted(ACTIVE):
            n = await store.count_jobs(JobFilter(target=target.name, state=state))
            if n:
                counted.setdefault(target.name, {})[state.value] = n
    assert await store.backlog_by_target() == counted
    assert await store.repair_backlog() == {}


def minutes(rows: list[Activity]) -> dict[tuple[str, float], tuple[int, int, int]]:
    """(target, minute) -> (accepted, succeeded, failed)."""
    return {(a.target, a.minute): (a.accepted, a.succeeded, a.failed) for a in rows}


class TestStoreContract:
    """What every ``JobStore`` does, proven on each backend alike."""

    async def test_a_new_job_takes_the_targets_limits(self, store: Store) -> None:
        enqueued = await store.enqueue(new_job())
        assert not enqueued.replayed
        job = enqueued.job
        assert (job.state, job.max_attempts, job.expires_at) == (JobState.QUEUED, 10, NOW + 86400)
        stored = await store.get_job("", job.id)
        assert stored == job

    async def test_a_future_job_is_scheduled(self, store: Store) -> None:
        job = (await store.enqueue(new_job(next_attempt_at=NOW + 60))).job
        assert job.state is JobState.SCHEDULED

    async def test_one_key_makes_one_job_under_concurrency(self, store: Store) -> None:
        results = await asyncio.gather(*(store.enqueue(new_job("same")) for _ in range(50)))
        assert len({r.job.id for r in results}) == 1
        assert sum(not r.replayed for r in results) == 1
        assert store.active == 1

    async def test_a_key_reused_for_another_request_is_refused(self, store: Store) -> None:
        first = (await store.enqueue(new_job("k", fingerprint="a"))).job
        with pytest.raises(errors.IdempotencyKeyReused) as info:
            await store.enqueue(new_job("k", fingerprint="b"))
        assert info.value.extensions["job_id"] == first.id

    async def test_keys_are_scoped_per_caller(self, store: Store) -> None:
        a = await store.enqueue(new_job("k", caller="alice"))
        b = await store.enqueue(new_job("k", caller="bob"))
        assert a.job.id != b.job.id
        assert await store.get_job("bob", a.job.id) is None

    async def test_putting_a_target_creates_it_then_replaces_it(self, store: Store) -> None:
        spec = TargetSpec(
            name="search", url="http://x/a", secret=SECRET, headers={"authorization": HEADER_VALUE}
        )
        created, is_new = await store.put_target(spec, NOW)
        assert is_new and created.spec == spec
        assert (created.created_at, created.updated_at) == (NOW, NOW)

        replacement = TargetSpec(name="search", url="http://x/b", max_attempts=3, enabled=False)
        replaced, is_new = await store.put_target(replacement, NOW + 5)
        assert not is_new and replaced.spec == replacement  # secret and headers replaced too
        assert (replaced.created_at, replaced.updated_at) == (NOW, NOW + 5)
        assert replaced.disabled_reason == "disabled by an operator"
        assert await store.get_target("search") == replaced

    async def test_puts_of_one_new_target_at_once_create_it_once(self, store: Store) -> None:
        results = await asyncio.gather(
            *(
                store.put_target(TargetSpec(name="search", url=f"http://x/{i}"), NOW)
                for i in range(4)
            )
        )
        assert [is_new for _, is_new in results] == [True, False, False, False]
        stored = await store.get_target("search")
        assert stored is not None and stored.spec.url == "http://x/3"

    async def test_a_target_is_replaced_only_if_unchanged_since_it_was_read(
        self, store: Store
    ) -> None:
        put, _ = await store.put_target(
            TargetSpec(name="search", url="http://x/a", secret=SECRET, headers={"a": "1"}), NOW
        )
        change = replace(put.spec, url="http://x/b", enabled=False)
        written = await store.replace_target(
            change, disabled_reason="the target answered 410 Gone", seen=NOW, now=NOW + 5
        )
        assert written is not None and written.spec == change
        assert written.disabled_reason == "the target answered 410 Gone"
        assert (written.created_at, written.updated_at) == (NOW, NOW + 5)
        assert await store.get_target("search") == written

        # read at NOW, written at NOW + 5 since: the late writer changes nothing
        late = replace(put.spec, max_attempts=2)
        assert await store.replace_target(late, disabled_reason=None, seen=NOW, now=NOW + 6) is None
        assert await store.get_target("search") == written

        missing = TargetSpec(name="nope", url="http://x/a")
        assert await store.replace_target(missing, disabled_reason=None, seen=NOW, now=NOW) is None
        assert await store.get_target("nope") is None

    async def test_replacing_a_target_keeps_its_pause(self, store: Store) -> None:
        job = await running(store)
        throttled = Decision(
            state=JobState.RETRYING,
            attempts=1,
            next_attempt_at=NOW + 30,
            pause_target_until=NOW + 30,
        )
        assert await store.complete(result(job, throttled, status=429))
        before = await store.get_target("billing")
        assert before is not None and before.paused_until == NOW + 30
        change = replace(before.spec, timeout_s=2.0)
        written = await store.replace_target(
            change, disabled_reason=None, seen=before.updated_at, now=NOW + 3
        )
        assert written is not None and written.paused_until == NOW + 30
        assert written.spec.timeout_s == 2.0

    async def test_unknown_target_is_refused_and_nothing_stored(self, store: Store) -> None:
        with pytest.raises(errors.UnknownTarget):
            await store.enqueue(new_job(target="nope"))
        assert await store.list_jobs(JobFilter(caller=""), limit=10, before_id=None) == []

    async def test_a_full_backlog_refuses_new_keys_but_replays_stored_ones(
        self, open_store: OpenStore
    ) -> None:
        s = await open_store(max_backlog=2)
        await s.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
        first = await s.enqueue(new_job("a"))
        await s.enqueue(new_job("b"))
        with pytest.raises(errors.BacklogFull) as info:
            await s.enqueue(new_job("c"))
        assert info.value.retry_after_s
        replay = await s.enqueue(new_job("a"))
        assert replay.replayed and replay.job.id == first.job.id
        assert len(await s.list_jobs(JobFilter(caller=""), limit=10, before_id=None)) == 2

    async def test_a_batch_answers_each_job_and_refuses_only_the_bad_ones(
        self, open_store: OpenStore
    ) -> None:
        s = await open_store(max_backlog=3)
        await s.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
        stored = (await s.enqueue(new_job("old", fingerprint="a"))).job
        answers = await s.enqueue_many(
            [
                new_job("n1"),
                new_job("nope", target="nope"),
                new_job("old", fingerprint="a"),  # a replay
                new_job("old", fingerprint="b"),  # the key, for another request
                new_job("n1"),  # the key again within the batch: the same job
                new_job("late", refusal=errors.Unprocessable("too late")),
                new_job("n2", next_attempt_at=NOW + 60),
                new_job("n3"),  # over the backlog of 3
            ]
        )
        new1, unknown, replay, reused, again, late, new2, full = answers
        assert isinstance(new1, Enqueued) and not new1.replayed
        assert isinstance(unknown, errors.UnknownTarget)
        assert isinstance(replay, Enqueued) and replay.replayed
        assert replay.job.id == stored.id
        assert isinstance(reused, errors.IdempotencyKeyReused)
        assert reused.extensions["job_id"] == stored.id
        assert isinstance(again, Enqueued) and again.replayed and again.job.id == new1.job.id
        assert isinstance(late, errors.Unprocessable)
        assert isinstance(new2, Enqueued) and new2.job.state is JobState.SCHEDULED
        assert isinstance(full, errors.BacklogFull)
        listed = await s.list_jobs(JobFilter(caller=""), limit=10, before_id=None)
        assert {j.id for j in listed} == {stored.id, new1.job.id, new2.job.id}
        assert s.active == 3
        await assert_counts_exact(s)
        assert minutes(await s.activity(NOW - 60, NOW + 60)) == {
            ("billing", NOW // 60 * 60): (3, 0, 0)
        }

    async def test_a_batch_is_stored_in_one_commit(self, store: Store) -> None:
        """Readers see all of a batch or none of it, however many jobs it holds (more
        than one group commit takes of single jobs)."""
        jobs = [new_job(f"b{i}") for i in range(600)]
        seen: list[int] = []
        batch = asyncio.create_task(store.enqueue_many(jobs))
        while not batch.done():
            seen.append(await store.count_jobs(JobFilter(state=JobState.QUEUED)))
            await asyncio.sleep(0)
        answers = await batch
        assert all(isinstance(a, Enqueued) and not a.replayed for a in answers)
        assert [a.job.idempotency_key for a in answers] == [f"b{i}" for i in range(600)]  # type: ignore[union-attr]
        assert set(seen) <= {0, 600}
        assert await store.count_jobs(JobFilter()) == 600
        assert store.active == 600
        await assert_counts_exact(store)

    async def test_claims_respect_the_limit_and_lease(self, store: Store) -> None:
        for i in range(5):
            await store.enqueue(new_job(f"k{i}"))
        claimed = await store.claim(
            [ClaimRequest(target="billing", limit=3)], NOW + 1, {"billing": 40}
        )
        assert len(claimed) == 3
        assert all(j.state is JobState.RUNNING and j.delivery == 1 for j in claimed)
        assert all(j.lease_expires_at == NOW + 41 for j in claimed)
        again = await store.claim(
            [ClaimRequest(target="billing", limit=10)], NOW + 1, {"billing": 40}
        )
        assert len(again) == 2
        assert {j.id for j in claimed}.isdisjoint({j.id for j in again})

    async def test_scheduled_jobs_are_claimed_only_once_due(self, store: Store) -> None:
        await store.enqueue(new_job(next_attempt_at=NOW + 60))
        assert (
            await store.claim([ClaimRequest(target="billing", limit=5)], NOW + 59, {"billing": 1})
            == []
        )
        assert await store.next_due() == NOW + 60
        claimed = await store.claim(
            [ClaimRequest(target="billing", limit=5)], NOW + 60, {"billing": 1}
        )
        assert len(claimed) == 1

    async def test_a_claim_round_says_when_the_next_waiting_job_comes_due(
        self, store: Store
    ) -> None:
        # what the claim loop sleeps on, read in the claim's own transaction
        await store.enqueue(new_job("later", next_attempt_at=NOW + 60))
        await store.enqueue(new_job("sooner", next_attempt_at=NOW + 30))
        await store.enqueue(new_job("now", next_attempt_at=NOW))
        first = await store.claim_round(
            [ClaimRequest(target="billing", limit=5)], NOW, {"billing": 1}
        )
        assert [j.idempotency_key for j in first.jobs] == ["now"]
        assert first.next_due == NOW + 30 == await store.next_due()
        # the sooner one is promoted and claimed by this round: the later one is next
        second = await store.claim_round(
            [ClaimRequest(target="billing", limit=5)], NOW + 30, {"billing": 1}
        )
        assert [j.idempotency_key for j in second.jobs] == ["sooner"]
        assert second.next_due == NOW + 60
        # a round with nothing to claim still promotes, and still looks ahead
        empty = await store.claim_round([], NOW + 60, {})
        assert (empty.jobs, empty.next_due) == ([], None)
        assert await store.next_due() is None

    async def test_a_claim_takes_no_more_retries_than_it_asks_for(self, store: Store) -> None:
        retries = [await sent_once(store, f"r{i}", NOW - 10 + i) for i in range(3)]
        firsts = [
            (await store.enqueue(new_job(f"f{i}", next_attempt_at=NOW + i))).job.id
            for i in range(3)
        ]
        claim = [ClaimRequest(target="billing", limit=5, retries=1)]
        claimed = await store.claim(claim, NOW + 5, {"billing": 30})
        # the oldest retry, then first attempts in order: over-budget retries do not
        # hold first attempts back
        assert [j.id for j in claimed] == [retries[0], *firsts]
        assert [j.delivery for j in claimed] == [2, 1, 1, 1]
        none = [ClaimRequest(target="billing", limit=5, retries=0)]
        assert await store.claim(none, NOW + 5, {"billing": 30}) == []
        left = await store.claim(
            [ClaimRequest(target="billing", limit=5)], NOW + 5, {"billing": 30}
        )
        assert [j.id for j in left] == retries[1:]

    async def test_claims_with_a_retry_bound_keep_due_order(self, store: Store) -> None:
        retries = [await sent_once(store, f"r{i}", NOW - 10 + i) for i in range(3)]
        firsts = [
            (await store.enqueue(new_job(f"f{i}", next_attempt_at=NOW + i))).job.id
            for i in range(3)
        ]
        claim = [ClaimRequest(target="billing", limit=2, retries=2)]
        assert [j.id for j in await store.claim(claim, NOW + 5, {"billing": 30})] == retries[:2]
        claim = [ClaimRequest(target="billing", limit=2, retries=5)]
        assert [j.id for j in await store.claim(claim, NOW + 5, {"billing": 30})] == [
            retries[2],
            firsts[0],
        ]

    async def test_a_job_put_back_unsent_is_still_a_first_attempt(self, store: Store) -> None:
        job_id = await sent_once(store, "k", NOW, sent=False)
        claim = [ClaimRequest(target="billing", limit=1, retries=0)]
        [claimed] = await store.claim(claim, NOW, {"billing": 30})
        assert (claimed.id, claimed.delivery) == (job_id, 1)

    async def test_a_stale_completion_changes_nothing(self, store: Store) -> None:
        job = (await store.enqueue(new_job())).job
        claimed = (
            await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1})
        )[0]
        done = Decision(state=JobState.SUCCEEDED, attempts=1, next_attempt_at=None)
        stale = Completion(
            job_id=job.id,
            target="billing",
            delivery=claimed.delivery + 1,
            decision=done,
            attempt=attempt(1),
            now=NOW,
        )
        assert not await store.complete(stale)
        assert (await store.get_job("", job.id)).state is JobState.RUNNING  # type: ignore[union-attr]
        fresh = Completion(
            job_id=job.id,
            target="billing",
            delivery=claimed.delivery,
            decision=done,
            attempt=attempt(1),
            now=NOW,
        )
        assert await store.complete(fresh)
        assert not await store.complete(fresh)  # a second write of the same attempt is stale too
        stored = await store.get_job("", job.id)
        assert stored is not None and stored.state is JobState.SUCCEEDED
        assert len(await store.list_attempts("", job.id) or []) == 1
        assert store.active == 0

    async def test_an_answer_with_nul_bytes_is_stored_and_shares_its_commit(
        self, store: Store
    ) -> None:
        """Postgres refuses NUL in text: the answer is kept as what text it can be, and the
        other writes of the same group commit (here, a producer's job) still land."""
        job = (await store.enqueue(new_job("a"))).job
        claimed = (
            await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1})
        )[0]
        binary = AttemptRecord(
            delivery=1,
            started_at=NOW,
            finished_at=NOW + 0.01,
            duration_ms=10.0,
            status_code=500,
            outcome=Outcome.RETRYABLE,
            error="HTTP 500\x00",
            response_excerpt="ok\x00\udc80tail",
            content_type="application/octet-stream\x00",
            response_bytes=3_000_000_000,  # a large download's Content-Length: past 32 bits
        )
        retry = Decision(state=JobState.RETRYING, attempts=1, next_attempt_at=NOW + 5)
        completion = Completion(
            job_id=job.id,
            target="billing",
            delivery=claimed.delivery,
            decision=retry,
            attempt=binary,
            now=NOW,
        )
        written, other = await asyncio.gather(
            store.complete(completion), store.enqueue(new_job("b"))
        )
        assert written and not other.replayed
        assert await store.get_job("", other.job.id) is not None
        [stored] = await store.list_attempts("", job.id) or []
        assert stored.response_excerpt == "ok\ufffd\ufffdtail"
        assert stored.error == "HTTP 500\ufffd"
        assert (stored.content_type, stored.response_bytes) == (
            "application/octet-stream\ufffd",
            3_000_000_000,
        )

    async def test_attempts_are_listed_a_page_at_a_time_after_a_number(self, store: Store) -> None:
        job_id = await _attempted(store, 7)

        async def numbers(**page: int) -> list[int]:
            found = await store.list_attempts("", job_id, **page)
            assert found is not None
            return [a.delivery for a in found]

        assert await numbers() == [1, 2, 3, 4, 5, 6, 7]
        assert await numbers(limit=3) == [1, 2, 3]
        assert await numbers(after=3, limit=3) == [4, 5, 6]
        assert await numbers(after=6, limit=3) == [7]
        assert await numbers(after=7) == []
        assert await store.list_attempts("someone-else", job_id, after=0, limit=3) is None

    async def test_a_page_of_attempts_is_bounded_by_default(self, store: Store) -> None:
        job_id = await _attempted(store, ATTEMPTS_PAGE + 2)
        first = await store.list_attempts("", job_id)
        assert first is not None and [a.delivery for a in first] == list(
            range(1, ATTEMPTS_PAGE + 1)
        )

    async def test_rescue_brings_back_running_jobs_counting_the_attempt(self, store: Store) -> None:
        job = (await store.enqueue(new_job())).job
        await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1})
        assert await store.rescue(NOW + 5, random.Random(1).random) == 1
        rescued = await store.get_job("", job.id)
        assert rescued is not None
        assert (rescued.state, rescued.attempts) == (JobState.RETRYING, 1)
        attempts = await store.list_attempts("", job.id)
        assert attempts is not None and attempts[0].outcome is Outcome.INTERRUPTED
        await assert_counts_exact(store)

    async def test_rescue_fails_a_job_whose_last_attempt_was_lost(self, store: Store) -> None:
        job = (await store.enqueue(new_job(max_attempts=1))).job
        await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1})
        await store.rescue(NOW + 5, random.Random(1).random)
        failed = await store.get_job("", job.id)
        assert failed is not None
        assert (failed.state, failed.failure_reason) == (
            JobState.FAILED,
            FailureReason.ATTEMPTS_EXHAUSTED,
        )

    async def test_cancel_then_retry_follow_the_diagram(self, store: Store) -> None:
        job = (await store.enqueue(new_job())).job
        cancelled = await store.cancel("", job.id, NOW + 1)
        assert cancelled.state is JobState.CANCELLED and store.active == 0
        with pytest.raises(errors.Conflict):
            await store.cancel("", job.id, NOW + 2)
        retried = await store.retry("", job.id, NOW + 3)
        assert (retried.state, retried.attempts) == (JobState.QUEUED, 0)
        assert retried.expires_at == NOW + 3 + 86400
        with pytest.raises(errors.Conflict):
            await store.retry("", job.id, NOW + 4)
        with pytest.raises(errors.NotFound):
            await store.cancel("", "00000000-0000-7000-8000-000000000000", NOW)

    async def test_without_a_caller_jobs_of_every_caller_are_listed_found_and_retried(
        self, store: Store
    ) -> None:
        alice = (await store.enqueue(new_job("k", caller="alice", expires_at=NOW + 10))).job
        bob = (await store.enqueue(new_job("k", caller="bob", expires_at=NOW + 10))).job
        assert await store.fail_expired(NOW + 11) == 2

        failed = await store.list_jobs(JobFilter(state=JobState.FAILED), limit=10, before_id=None)
        assert [(j.id, j.caller) for j in failed] == [(bob.id, "bob"), (alice.id, "alice")]
        mine = await store.list_jobs(JobFilter(caller="alice"), limit=10, before_id=None)
        assert [j.id for j in mine] == [alice.id]
        found = await store.get_job(None, bob.id)
        assert found is not None and found.caller == "bob"
        assert await store.get_job("alice", bob.id) is None

        retried = await store.retry(found.caller, found.id, NOW + 12)
        assert (retried.state, retried.caller) == (JobState.QUEUED, "bob")
        still_failed = await store.list_jobs(
            JobFilter(state=JobState.FAILED), limit=10, before_id=None
        )
        assert [j.id for j in still_failed] == [alice.id]

    async def test_each_minute_counts_the_jobs_accepted_and_finished_in_it(
        self, store: Store
    ) -> None:
        await store.put_target(TargetSpec(name="search", url="http://x/hook"), NOW)

        def at(t: float, key: str, **kw: object) -> NewJob:
            return new_job(key, id=uuid7(int(t * 1000)), created_at=t, next_attempt_at=t, **kw)

        await store.enqueue(at(NOW - 30, "before-the-window"))
        await store.enqueue(at(NOW + 5, "a"))
        await store.enqueue(at(NOW + 65, "b"))
        await store.enqueue(at(NOW + 70, "c", target="search", expires_at=NOW + 100))
        # a replay, a reused key and a refusal store nothing, and count nothing
        assert (await store.enqueue(at(NOW + 80, "a"))).replayed
        with pytest.raises(errors.IdempotencyKeyReused):
            await store.enqueue(at(NOW + 80, "b", fingerprint="other"))
        with pytest.raises(errors.UnknownTarget):
            await store.enqueue(at(NOW + 80, "d", target="nowhere"))
        [early] = await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 30})
        # accepted before the window, finished inside it
        assert await store.complete(result(early, SUCCEEDED, at=NOW + 130))
        assert await store.fail_expired(NOW + 150) == 1
        cancelled = await store.get_job("", (await store.enqueue(at(NOW + 66, "b"))).job.id)
        assert cancelled is not None
        await store.cancel("", cancelled.id, NOW + 160)  # finished, but neither way counted
        # sent again and finished again: the minute counts it again
        await store.retry("", early.id, NOW + 170)
        claimed = await store.claim(
            [ClaimRequest(target="billing", limit=10)], NOW + 171, {"billing": 30}
        )
        [again] = [job for job in claimed if job.id == early.id]
        assert await store.complete(result(again, SUCCEEDED, at=NOW + 175))
        await store.enqueue(at(NOW + 200, "after-the-window"))

        assert minutes(await store.activity(NOW, NOW + 180)) == {
            ("billing", NOW): (1, 0, 0),
            ("billing", NOW + 60): (1, 0, 0),
            ("search", NOW + 60): (1, 0, 0),
            ("billing", NOW + 120): (0, 2, 0),
            ("search", NOW + 120): (0, 0, 1),
        }
        assert minutes(await store.activity(NOW - 60, NOW)) == {("billing", NOW - 60): (1, 0, 0)}
        await assert_counts_exact(store)

    async def test_an_attempt_running_when_cancelled_is_recorded_but_not_retried(
        self, store: Store
    ) -> None:
        job = (await store.enqueue(new_job())).job
        claimed = (
            await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1})
        )[0]
        await store.cancel("", job.id, NOW + 1)
        retry = Decision(state=JobState.RETRYING, attempts=1, next_attempt_at=NOW + 5)
        assert await store.complete(
            Completion(
                job_id=job.id,
                target="billing",
                delivery=claimed.delivery,
                decision=retry,
                attempt=attempt(1, Outcome.RETRYABLE, 500),
                now=NOW + 2,
            )
        )
        final = await store.get_job("", job.id)
        assert final is not None
        assert (final.state, final.attempts, final.last_status_code) == (JobState.CANCELLED, 1, 500)

    async def test_expired_waiting_jobs_fail(self, store: Store) -> None:
        job = (await store.enqueue(new_job(expires_at=NOW + 10, next_attempt_at=NOW + 60))).job
        assert await store.fail_expired(NOW + 11) == 1
        failed = await store.get_job("", job.id)
        assert failed is not None
        assert (failed.state, failed.failure_reason) == (JobState.FAILED, FailureReason.EXPIRED)

    async def test_purge_removes_old_finished_jobs_and_frees_their_keys(self, store: Store) -> None:
        job = (await store.enqueue(new_job("k"))).job
        await store.cancel("", job.id, NOW)
        assert await store.purge(NOW - 1) == 0
        assert await store.purge(NOW + 1) == 1
        assert await store.get_job("", job.id) is None
        again = await store.enqueue(new_job("k", fingerprint="other"))
        assert not again.replayed

    async def test_a_target_with_unfinished_jobs_cannot_be_deleted(self, store: Store) -> None:
        job = (await store.enqueue(new_job())).job
        with pytest.raises(errors.Conflict):
            await store.delete_target("billing")
        await store.cancel("", job.id, NOW)
        await store.delete_target("billing")
        assert await store.get_target("billing") is None
        with pytest.raises(errors.NotFound):
            await store.delete_target("billing")

    async def test_a_running_job_is_rescued_only_once_its_lease_ran_out(self, store: Store) -> None:
        job = (await store.enqueue(new_job())).job
        await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 30})
        rng = random.Random(1).random
        assert await store.rescue(NOW + 29, rng, expired_only=True) == 0
        assert await store.rescue(NOW + 31, rng, expired_only=True) == 1
        rescued = await store.get_job("", job.id)
        assert rescued is not None and rescued.state is JobState.RETRYING

    async def test_leases_are_extended_only_under_the_current_token(self, store: Store) -> None:
        job = (await store.enqueue(new_job())).job
        claimed = (
            await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 30})
        )[0]
        assert await store.extend_leases({job.id: claimed.delivery + 1}, NOW + 99) == 0
        assert await store.extend_leases({job.id: claimed.delivery}, NOW + 60) == 1
        extended = await store.get_job("", job.id)
        assert extended is not None and extended.lease_expires_at == NOW + 60
        rng = random.Random(1).random
        assert await store.rescue(NOW + 31, rng, expired_only=True) == 0  # alive: not rescued

    async def test_one_holder_leads_a_duty_until_its_lease_lapses(self, store: Store) -> None:
        assert await store.try_lead("maintenance", "a", NOW, 15)
        assert not await store.try_lead("maintenance", "b", NOW + 5, 15)
        assert await store.try_lead("maintenance", "a", NOW + 10, 15)  # renewed to NOW + 25
        assert not await store.try_lead("maintenance", "b", NOW + 24, 15)
        assert await store.try_lead("maintenance", "b", NOW + 26, 15)  # a stopped renewing
        assert not await store.try_lead("maintenance", "a", NOW + 27, 15)

    async def test_a_holder_that_resigns_hands_its_duty_on_at_once(self, store: Store) -> None:
        assert await store.try_lead("maintenance", "a", NOW, 15)
        await store.resign("maintenance", "b")  # not b's to give up
        assert not await store.try_lead("maintenance", "b", NOW + 1, 15)
        await store.resign("maintenance", "a")
        assert await store.try_lead("maintenance", "b", NOW + 2, 15)  # before a's lease ends
        await store.resign("maintenance", "a")  # no longer a's: b keeps it
        assert not await store.try_lead("maintenance", "a", NOW + 3, 15)

    async def test_every_change_of_state_is_announced_after_its_commit(self, store: Store) -> None:
        heard: list[list[str] | None] = []
        store.on_change = lambda ids: heard.append(None if ids is None else list(ids))
        now_job = (await store.enqueue(new_job("now"))).job
        later = (await store.enqueue(new_job("later", next_attempt_at=NOW + 60))).job
        assert heard == []  # a new job has no one waiting on it yet
        claim = [ClaimRequest(target="billing", limit=5)]
        claimed = await store.claim(claim, NOW + 1, {"billing": 30})
        assert heard == [[now_job.id]]
        done = Decision(state=JobState.SUCCEEDED, attempts=1, next_attempt_at=None)
        finished = Completion(
            job_id=now_job.id,
            target="billing",
            delivery=claimed[0].delivery,
            decision=done,
            attempt=attempt(1),
            now=NOW + 2,
        )
        assert await store.complete(finished)
        assert heard[-1] == [now_job.id]
        await store.claim(claim, NOW + 61, {"billing": 30})  # 'later' came due, and was claimed
        assert heard[-1] == [later.id, later.id]
        await store.rescue(NOW + 62, random.Random(1))
        assert heard[-1] is None
        cancelled = (await store.enqueue(new_job("c", next_attempt_at=NOW + 600))).job
        await store.cancel("", cancelled.id, NOW + 63)
        assert heard[-1] == [cancelled.id]
        await store.retry("", cancelled.id, NOW + 64)
        assert heard[-1] == [cancelled.id]
        unknown = [f"no-such-job-{i}" for i in range(40_000)]  # over any driver's parameter cap
        versions = await store.job_versions([*unknown, later.id, cancelled.id])
        assert set(versions) == {later.id, cancelled.id}
        assert versions[cancelled.id] == ("queued", NOW + 64)

    # -- what the memory store must do alike, each proven on every backend ------

    async def test_many_producers_at_once_each_get_their_own_job(self, store: Store) -> None:
        results = await asyncio.gather(*(store.enqueue(new_job(f"k{i}")) for i in range(300)))
        assert len({r.job.id for r in results}) == 300 and not any(r.replayed for r in results)
        assert store.active == 300 and await store.recount() == 300

    async def test_a_new_job_keeps_what_it_says_and_takes_the_rest_from_its_target(
        self, store: Store
    ) -> None:
        made = new_job(
            max_attempts=3, expires_at=NOW + 50, headers={"x-a": "1"}, payload=b'{"a":[1]}'
        )
        job = (await store.enqueue(made)).job
        assert (job.id, job.caller, job.idempotency_key, job.target) == (
            made.id,
            "",
            "k",
            "billing",
        )
        assert (job.max_attempts, job.expires_at, job.headers, job.payload) == (
            3,
            NOW + 50,
            {"x-a": "1"},
            b'{"a":[1]}',
        )
        assert (job.attempts, job.delivery, job.created_at, job.updated_at) == (0, 0, NOW, NOW)
        assert (job.next_attempt_at, job.completed_at, job.claimed_at) == (NOW, None, None)
        assert (job.lease_expires_at, job.last_status_code, job.last_error) == (None, None, None)
        assert job.failure_reason is None
        assert await store.get_job("", job.id) == job
        no_headers = (await store.enqueue(new_job("other", headers={}))).job
        assert no_headers.headers is None

    async def test_a_refusal_stands_only_for_a_key_not_yet_stored(self, store: Store) -> None:
        """A producer sending a stored job again hears of it, whatever would refuse the
        request now (its expires_at passed, its target deleted since)."""
        stored = (await store.enqueue(new_job("k"))).job
        refusal = errors.Unprocessable("expires_at is in the past")
        replay = await store.enqueue(new_job("k", refusal=refusal))
        assert replay.replayed and replay.job == stored
        with pytest.raises(errors.IdempotencyKeyReused):
            await store.enqueue(new_job("k", fingerprint="other", refusal=refusal))
        with pytest.raises(errors.Unprocessable) as info:
            await store.enqueue(new_job("new", refusal=refusal))
        assert info.value is refusal
        await store.cancel("", stored.id, NOW)
        await store.delete_target("billing")
        gone = await store.enqueue(new_job("k"))
        assert gone.replayed and gone.job.state is JobState.CANCELLED
        with pytest.raises(errors.UnknownTarget) as unknown:
            await store.enqueue(new_job("new"))
        assert unknown.value.extensions == {"target": "billing"}
        listed = await store.list_jobs(JobFilter(), limit=10, before_id=None)
        assert [j.id for j in listed] == [stored.id]

    async def test_the_very_same_request_stored_again_is_answered_as_made(
        self, store: Store
    ) -> None:
        """The same request (its id too) again: as a batch run again after its commit's
        answer was lost meets it, the job it made, not a replay."""
        made = new_job("k")
        first = await store.enqueue(made)
        again = await store.enqueue(made)
        assert not again.replayed and again.job == first.job

    async def test_a_target_in_use_says_how_many_unfinished_jobs_name_it(
        self, store: Store
    ) -> None:
        await store.enqueue(new_job("a"))
        await store.enqueue(new_job("b", next_attempt_at=NOW + 60))
        done = await running(store, "c")
        assert await store.complete(result(done, SUCCEEDED))
        with pytest.raises(errors.Conflict) as info:
            await store.delete_target("billing")
        assert info.value.extensions == {"unfinished_jobs": 2}
        with pytest.raises(errors.NotFound):
            await store.delete_target("nope")

    async def test_targets_are_listed_by_name(self, store: Store) -> None:
        for name in ("search", "audit", "mail"):
            await store.put_target(TargetSpec(name=name, url="http://x/hook"), NOW)
        names = [t.name for t in await store.list_targets()]
        assert names == ["audit", "billing", "mail", "search"]
        assert await store.get_target("nope") is None

    async def test_a_throttling_target_is_paused_never_for_less_than_it_already_is(
        self, store: Store
    ) -> None:
        def throttled(until: float) -> Decision:
            return Decision(
                state=JobState.RETRYING,
                attempts=1,
                next_attempt_at=until,
                pause_target_until=until,
            )

        jobs = [await running(store, f"k{i}") for i in range(3)]
        assert await store.complete(result(jobs[0], throttled(NOW + 30), status=429))
        assert await store.complete(result(jobs[1], throttled(NOW + 10), status=429))
        target = await store.get_target("billing")
        assert target is not None and (target.paused_until, target.updated_at) == (NOW + 30, NOW)
        assert await store.complete(result(jobs[2], throttled(NOW + 40), status=429))
        target = await store.get_target("billing")
        assert target is not None and target.paused_until == NOW + 40
        stale = result(jobs[2], throttled(NOW + 90), status=429)
        assert not await store.complete(stale)  # a stale result moves no target either
        target = await store.get_target("billing")
        assert target is not None and target.paused_until == NOW + 40
        # an operator's new configuration keeps the pause the target asked for
        replaced, _ = await store.put_target(TargetSpec(name="billing", url="http://x/b"), NOW + 2)
        assert replaced.paused_until == NOW + 40

    async def test_a_target_that_answered_gone_is_disabled(self, store: Store) -> None:
        job = await running(store)
        gone = Decision(
            state=JobState.FAILED,
            attempts=1,
            next_attempt_at=None,
            failure_reason=FailureReason.TARGET_GONE,
            disable_target=True,
        )
        assert await store.complete(result(job, gone, at=NOW + 3, status=410))
        target = await store.get_target("billing")
        assert target is not None and not target.spec.enabled
        assert (target.disabled_reason, target.updated_at) == (
            "the target answered 410 Gone",
            NOW + 3,
        )
        failed = await store.get_job("", job.id)
        assert failed is not None
        assert (failed.state, failed.failure_reason, failed.completed_at) == (
            JobState.FAILED,
            FailureReason.TARGET_GONE,
            NOW + 3,
        )
        assert (failed.last_status_code, failed.lease_expires_at) == (410, None)

    async def test_a_result_without_a_request_keeps_the_last_answer(self, store: Store) -> None:
        job = await running(store)
        again = Decision(state=JobState.RETRYING, attempts=1, next_attempt_at=NOW + 5)
        assert await store.complete(result(job, again, status=503))
        [job] = await store.claim(
            [ClaimRequest(target="billing", limit=1)], NOW + 5, {"billing": 30}
        )
        expired = Decision(
            state=JobState.FAILED,
            attempts=1,
            next_attempt_at=None,
            failure_reason=FailureReason.EXPIRED,
        )
        assert await store.complete(result(job, expired, at=NOW + 6, status=None, sent=False))
        failed = await store.get_job("", job.id)
        assert failed is not None
        assert (failed.state, failed.last_status_code, failed.delivery) == (
            JobState.FAILED,
            503,
            1,
        )
        assert [a.delivery for a in await store.list_attempts("", job.id) or []] == [1]

    async def test_a_rescue_writes_nothing_over_a_lease_renewed_meanwhile(
        self, store: Store
    ) -> None:
        job = await running(store)  # leased until NOW + 30
        interrupted = Decision(state=JobState.RETRYING, attempts=1, next_attempt_at=NOW + 31)
        assert not await store.complete(result(job, interrupted, lapsed_before=NOW + 30))
        still = await store.get_job("", job.id)
        assert still is not None and still.state is JobState.RUNNING
        assert await store.complete(result(job, interrupted, lapsed_before=NOW + 31))

    async def test_jobs_are_listed_newest_first_by_caller_state_and_target(
        self, store: Store
    ) -> None:
        await store.put_target(TargetSpec(name="search", url="http://x/hook"), NOW)
        ids = [uuid7(int(NOW * 1000) + i) for i in range(5)]
        for i, job_id in enumerate(ids):
            target = "search" if i % 2 else "billing"
            await store.enqueue(new_job(f"k{i}", id=job_id, target=target, caller="alice"))
        await store.enqueue(new_job("bob's", caller="bob"))
        await store.cancel("alice", ids[3], NOW)

        async def listed(
            caller: str | None = "alice",
            *,
            state: JobState | None = None,
            target: str | None = None,
            limit: int = 10,
            before_id: str | None = None,
        ) -> list[str]:
            found = await store.list_jobs(
                JobFilter(caller=caller, state=state, target=target),
                limit=limit,
                before_id=before_id,
            )
            return [job.id for job in found]

        assert await listed() == ids[::-1]
        assert await listed(limit=2) == [ids[4], ids[3]]
        assert await listed(limit=2, before_id=ids[3]) == [ids[2], ids[1]]
        assert await listed(target="search") == [ids[3], ids[1]]
        assert await listed(state=JobState.CANCELLED) == [ids[3]]
        assert await listed(state=JobState.QUEUED, target="search") == [ids[1]]
        assert len(await listed(None)) == 6
        assert await listed("carol") == []

    async def test_jobs_are_counted_by_state_and_by_target(self, store: Store) -> None:
        assert await store.next_due() is None
        await store.enqueue(new_job("queued"))
        await store.enqueue(new_job("later", next_attempt_at=NOW + 90))
        await store.enqueue(new_job("soon", next_attempt_at=NOW + 60))
        cancelled = (await store.enqueue(new_job("cancelled"))).job
        await store.cancel("", cancelled.id, NOW)
        await running(store, "running")
        assert await store.count_by_state() == {
            JobState.SCHEDULED: 2,
            JobState.QUEUED: 1,
            JobState.RUNNING: 1,
            JobState.RETRYING: 0,
            JobState.SUCCEEDED: 0,
            JobState.FAILED: 0,
            JobState.CANCELLED: 1,
        }
        assert await store.count_by_state(ACTIVE) == dict.fromkeys(ACTIVE, 0) | {
            JobState.SCHEDULED: 2,
            JobState.QUEUED: 1,
            JobState.RUNNING: 1,
        }
        assert await store.backlog_by_target() == {
            "billing": {"scheduled": 2, "queued": 1, "running": 1}
        }
        await assert_counts_exact(store)
        assert await store.next_due() == NOW + 60
        assert store.active == await store.recount() == 4

    async def test_a_cancel_made_again_at_its_time_answers_the_cancelled_job(
        self, store: Store
    ) -> None:
        """As it does when the first run's answer was lost with its connection."""
        job = (await store.enqueue(new_job())).job
        cancelled = await store.cancel("", job.id, NOW + 1)
        assert await store.cancel("", job.id, NOW + 1) == cancelled
        with pytest.raises(IllegalTransition) as info:
            await store.cancel("", job.id, NOW + 2)
        assert info.value.extensions == {"state": "cancelled"}
        with pytest.raises(errors.NotFound):
            await store.cancel("someone-else", job.id, NOW + 1)

    async def test_an_operator_retry_needs_the_target_and_room_in_the_backlog(
        self, open_store: OpenStore
    ) -> None:
        s = await open_store(max_backlog=2)
        await s.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
        await s.put_target(TargetSpec(name="search", url="http://x/hook"), NOW)
        cancelled = (await s.enqueue(new_job("a"))).job
        await s.cancel("", cancelled.id, NOW)
        orphan = (await s.enqueue(new_job("b", target="search"))).job
        await s.cancel("", orphan.id, NOW)
        await s.delete_target("search")
        with pytest.raises(errors.Conflict) as info:
            await s.retry("", orphan.id, NOW + 1)
        assert not isinstance(info.value, IllegalTransition)
        active = (await s.enqueue(new_job("c"))).job
        with pytest.raises(IllegalTransition) as illegal:
            await s.retry("", active.id, NOW + 1)
        assert illegal.value.extensions == {"state": "queued"}
        await s.enqueue(new_job("d"))
        with pytest.raises(errors.BacklogFull):
            await s.retry("", cancelled.id, NOW + 1)
        with pytest.raises(errors.NotFound):
            await s.retry("someone-else", cancelled.id, NOW + 1)
        unchanged = await s.get_job("", cancelled.id)
        assert unchanged is not None and unchanged.state is JobState.CANCELLED

    async def test_an_operator_retry_of_a_sent_job_is_claimed_as_a_retry(
        self, store: Store
    ) -> None:
        job = await running(store, expires_at=NOW + 100)
        permanent = Decision(
            state=JobState.FAILED,
            attempts=1,
            next_attempt_at=None,
            failure_reason=FailureReason.PERMANENT_STATUS,
        )
        assert await store.complete(result(job, permanent, status=400))
        retried = await store.retry("", job.id, NOW + 10)
        assert (retried.state, retried.attempts, retried.delivery) == (JobState.QUEUED, 0, 1)
        assert (retried.failure_reason, retried.completed_at, retried.next_attempt_at) == (
            None,
            None,
            NOW + 10,
        )
        assert (retried.expires_at, retried.last_status_code) == (NOW + 110, 400)
        firsts_only = [ClaimRequest(target="billing", limit=1, retries=0)]
        assert await store.claim(firsts_only, NOW + 10, {"billing": 30}) == []
        [again] = await store.claim(
            [ClaimRequest(target="billing", limit=1)], NOW + 10, {"billing": 30}
        )
        assert (again.id, again.delivery) == (job.id, 2)

    async def test_a_succeeded_job_retried_is_sent_again_its_history_kept(
        self, store: Store
    ) -> None:
        job = await running(store, expires_at=NOW + 100)
        assert await store.complete(result(job, SUCCEEDED))
        assert store.active == 0
        retried = await store.retry("", job.id, NOW + 10)
        assert (retried.state, retried.attempts, retried.delivery) == (JobState.QUEUED, 0, 1)
        assert (retried.completed_at, retried.next_attempt_at, retried.expires_at) == (
            None,
            NOW + 10,
            NOW + 110,
        )
        assert store.active == await store.recount() == 1
        [again] = await store.claim(
            [ClaimRequest(target="billing", limit=1)], NOW + 10, {"billing": 30}
        )
        assert (again.id, again.delivery) == (job.id, 2)  # the request numbers go on
        assert await store.complete(result(again, SUCCEEDED, at=NOW + 11))
        history = await store.list_attempts("", job.id) or []
        assert [(a.delivery, a.outcome) for a in history] == [
            (1, Outcome.SUCCESS),
            (2, Outcome.SUCCESS),
        ]
        done = await store.get_job("", job.id)
        assert done is not None and (done.state, done.attempts) == (JobState.SUCCEEDED, 1)

    async def test_without_a_caller_any_callers_job_is_cancelled_retried_and_read(
        self, store: Store
    ) -> None:
        job = (await store.enqueue(new_job("k", caller="alice"))).job
        with pytest.raises(errors.NotFound):
            await store.cancel("bob", job.id, NOW + 1)
        cancelled = await store.cancel(None, job.id, NOW + 1)
        assert (cancelled.state, cancelled.caller) == (JobState.CANCELLED, "alice")
        with pytest.raises(IllegalTransition):
            await store.cancel(None, job.id, NOW + 2)
        with pytest.raises(errors.NotFound):
            await store.retry("bob", job.id, NOW + 2)
        retried = await store.retry(None, job.id, NOW + 2)
        assert (retried.state, retried.caller) == (JobState.QUEUED, "alice")
        with pytest.raises(IllegalTransition):
            await store.retry(None, job.id, NOW + 3)
        assert await store.list_attempts(None, job.id) == []
        assert await store.list_attempts("bob", job.id) is None
        for unknown in (store.cancel, store.retry):
            with pytest.raises(errors.NotFound):
                await unknown(None, "00000000-0000-7000-8000-000000000000", NOW)

    async def test_jobs_are_listed_and_counted_by_every_filter(self, store: Store) -> None:
        await store.put_target(TargetSpec(name="search", url="http://x/hook"), NOW)
        made = {}
        for i, (key, caller, target) in enumerate(
            [
                ("gone", "alice", "billing"),
                ("used-up", "bob", "billing"),
                ("cancelled", "alice", "search"),
                ("queued", "bob", "search"),
                ("late", "alice", "billing"),
            ]
        ):
            at = NOW + 10 * i
            job = new_job(key, id=uuid7(int(at * 1000)), caller=caller, target=target)
            made[key] = (await store.enqueue(replace(job, created_at=at, next_attempt_at=at))).job
        for key, reason in (
            ("gone", FailureReason.TARGET_GONE),
            ("used-up", FailureReason.ATTEMPTS_EXHAUSTED),
        ):
            [claimed] = await store.claim(
                [ClaimRequest(target="billing", limit=1)], NOW + 30, {"billing": 30}
            )
            assert claimed.id == made[key].id
            failed = Decision(
                state=JobState.FAILED, attempts=1, next_attempt_at=None, failure_reason=reason
            )
            assert await store.complete(result(claimed, failed, at=NOW + 31, status=410))
        await store.cancel(None, made["cancelled"].id, NOW + 31)

        async def found(**fields: object) -> list[str]:
            where = JobFilter(**fields)  # type: ignore[arg-type]
            listed = await store.list_jobs(where, limit=10, before_id=None)
            assert await store.count_jobs(where) == len(listed)
            keys = {job.id: key for key, job in made.items()}
            return [keys[job.id] for job in listed]

        everything = ["late", "queued", "cancelled", "used-up", "gone"]
        assert await found() == everything
        assert await found(caller="alice") == ["late", "cancelled", "gone"]
        assert await found(caller="carol") == []
        assert await found(state=JobState.FAILED) == ["used-up", "gone"]
        assert await found(state=JobState.QUEUED) == ["late", "queued"]
        assert await found(target="search") == ["queued", "cancelled"]
        assert await found(reason=FailureReason.TARGET_GONE) == ["gone"]
        assert await found(reason=FailureReason.EXPIRED) == []
        assert await found(reason=FailureReason.TARGET_GONE, state=JobState.FAILED) == ["gone"]
        assert await found(reason=FailureReason.TARGET_GONE, state=JobState.QUEUED) == []
        assert await found(created_after=NOW + 20) == ["late", "queued", "cancelled"]
        assert await found(created_after=NOW + 19.5) == ["late", "queued", "cancelled"]
        assert await found(created_before=NOW + 20) == ["used-up", "gone"]
        assert await found(created_after=NOW + 10, created_before=NOW + 30) == [
            "cancelled",
            "used-up",
        ]
        assert await found(created_after=NOW + 41) == []
        assert await found(created_after=-1e9, created_before=NOW + 1) == ["gone"]
        assert await found(caller="bob", target="search", state=JobState.QUEUED) == ["queued"]
        assert await found(upto_id=made["cancelled"].id) == ["cancelled", "used-up", "gone"]
        assert await found(above_id=made["cancelled"].id) == ["late", "queued"]
        assert await found(above_id=made["gone"].id, upto_id=made["queued"].id, caller="bob") == [
            "queued",
            "used-up",
        ]
        page = await store.list_jobs(JobFilter(caller="alice"), limit=1, before_id=made["late"].id)
        assert [job.id for job in page] == [made["cancelled"].id]

    async def test_an_expired_job_whose_attempt_runs_is_left_to_its_attempt(
        self, store: Store
    ) -> None:
        job = await running(store, expires_at=NOW + 10)
        assert await store.fail_expired(NOW + 11) == 0
        still = await store.get_job("", job.id)
        assert still is not None and still.state is JobState.RUNNING

    async def test_an_attempt_cancelled_and_lost_is_rescued_and_stays_cancelled(
        self, store: Store
    ) -> None:
        job = await running(store)
        await store.cancel("", job.id, NOW + 1)
        assert await store.extend_leases({job.id: job.delivery}, NOW + 60) == 1
        assert await store.rescue(NOW + 61, random.Random(1).random, expired_only=True) == 1
        rescued = await store.get_job("", job.id)
        assert rescued is not None
        assert (rescued.state, rescued.attempts, rescued.lease_expires_at) == (
            JobState.CANCELLED,
            1,
            None,
        )
        assert (rescued.completed_at, rescued.updated_at) == (NOW + 1, NOW + 61)
        [lost] = await store.list_attempts("", job.id) or []
        assert (lost.delivery, lost.outcome, lost.started_at, lost.finished_at) == (
            1,
            Outcome.INTERRUPTED,
            NOW,
            NOW + 61,
        )
        assert not await store.complete(result(job, SUCCEEDED, at=NOW + 62))  # too late
        assert await store.extend_leases({job.id: job.delivery}, NOW + 90) == 0

    async def test_purge_keeps_unfinished_and_recently_finished_jobs(self, store: Store) -> None:
        queued = (await store.enqueue(new_job("queued"))).job
        old = await running(store, "old")
        assert await store.complete(result(old, SUCCEEDED, at=NOW + 1))
        recent = await running(store, "recent")
        assert await store.complete(result(recent, SUCCEEDED, at=NOW + 10))
        assert await store.purge(NOW + 5) == 1
        assert await store.get_job("", old.id) is None
        assert await store.list_attempts("", old.id) is None
        assert await store.get_job("", queued.id) is not None
        assert await store.get_job("", recent.id) is not None
        await assert_counts_exact(store)

    async def test_a_claim_without_room_takes_nothing_yet_brings_jobs_due(
        self, store: Store
    ) -> None:
        await store.put_target(TargetSpec(name="search", url="http://x/hook"), NOW)
        scheduled = (await store.enqueue(new_job("s", next_attempt_at=NOW + 10))).job
        await store.enqueue(new_job("other", target="search"))
        none = [ClaimRequest(target="billing", limit=0)]
        assert await store.claim(none, NOW + 10, {"billing": 30}) == []
        due = await store.get_job("", scheduled.id)
        assert due is not None and (due.state, due.updated_at) == (JobState.QUEUED, NOW + 10)
        [claimed] = await store.claim(
            [ClaimRequest(target="billing", limit=5)], NOW + 11, {"billing": 30}
        )
        assert claimed.id == scheduled.id  # and none of another target's jobs
        assert (claimed.claimed_at, claimed.updated_at) == (NOW + 11, NOW + 11)

    async def test_nothing_changed_is_announced_as_nothing(self, store: Store) -> None:
        heard: list[list[str] | None] = []
        store.on_change = lambda ids: heard.append(None if ids is None else list(ids))
        job = await running(store, expires_at=NOW + 100)
        assert heard == [[job.id]]
        heard.clear()
        assert (
            await store.claim([ClaimRequest(target="billing", limit=5)], NOW, {"billing": 30}) == []
        )
        assert not await store.complete(replace(result(job, SUCCEEDED), delivery=job.delivery + 1))
        assert await store.fail_expired(NOW + 50) == 0
        assert await store.rescue(NOW + 1, random.Random(1).random, expired_only=True) == 0
        assert heard == []
        waiting = (await store.enqueue(new_job("w", expires_at=NOW + 100))).job
        assert await store.fail_expired(NOW + 100) == 1
        assert heard == [None]
        assert (await store.get_job("", waiting.id)).state is JobState.FAILED  # type: ignore[union-attr]

    async def test_a_failure_and_a_success_count_in_the_minute_they_happened(
        self, store: Store
    ) -> None:
        """Whether by an attempt's result, a rescue or expiry; a cancel counts nowhere."""
        failing = await running(store, "permanent")
        assert await store.complete(result(failing, RESULTS[Event.FAILED], at=NOW + 61))
        await running(store, "lost", max_attempts=1)  # its only attempt is lost
        assert await store.rescue(NOW + 125, random.Random(1).random) == 1
        cancelled = await running(store, "cancelled")
        await store.cancel("", cancelled.id, NOW + 126)
        assert await store.complete(result(cancelled, SUCCEEDED, at=NOW + 127))  # recorded only
        ok = await running(store, "ok")
        assert await store.complete(result(ok, SUCCEEDED, at=NOW + 179.999))
        assert minutes(await store.activity(NOW, NOW + 180)) == {
            ("billing", NOW): (4, 0, 0),
            ("billing", NOW + 60): (0, 0, 1),
            ("billing", NOW + 120): (0, 1, 1),
        }
        assert await store.activity(NOW + 180, NOW + 240) == []
        await assert_counts_exact(store)

    async def test_old_minutes_are_forgotten(self, store: Store) -> None:
        for i, t in enumerate((NOW, NOW + 60, NOW + 125)):
            await store.enqueue(new_job(f"k{i}", id=uuid7(int(t * 1000)), created_at=t))
        assert await store.forget_minutes(NOW + 120) == 2
        assert minutes(await store.activity(0, NOW + 3600)) == {("billing", NOW + 120): (1, 0, 0)}
        assert await store.forget_minutes(NOW + 120) == 0

    async def test_a_deleted_target_takes_its_counts_with_it(self, store: Store) -> None:
        job = await running(store)
        assert await store.complete(result(job, SUCCEEDED))
        await store.delete_target("billing")
        assert await store.backlog_by_target() == {}
        assert await store.activity(0, NOW + 3600) == []
        await store.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW + 2)
        assert await store.activity(0, NOW + 3600) == []
        await assert_counts_exact(store)

    async def test_times_that_end_at_now_have_ended_only_for_what_is_due(
        self, store: Store
    ) -> None:
        """A job due or expiring at ``now`` is due or expired; a lease or a leadership
        ending at ``now`` still holds."""
        assert await store.try_lead("maintenance", "a", NOW, 15)
        assert not await store.try_lead("maintenance", "b", NOW + 15, 15)
        job = await running(store, "running")  # leased until NOW + 30
        assert await store.rescue(NOW + 30, random.Random(1).random, expired_only=True) == 0
        waiting = (await store.enqueue(new_job("w", expires_at=NOW + 40))).job
        assert await store.fail_expired(NOW + 40) == 1
        assert await store.rescue(NOW + 31, random.Random(1).random, expired_only=True) == 1
        rescued = await store.get_job("", job.id)
        failed = await store.get_job("", waiting.id)
        assert rescued is not None and rescued.state is JobState.RETRYING
        assert failed is not None and failed.state is JobState.FAILED

    async def test_the_store_answers_a_ping_and_tells_the_time(self, store: Store) -> None:
        await store.ping()
        assert abs(await store.database_time() - time.time()) < 5

    # -- the diagram: every edge the store takes, every other move it refuses ----

    @pytest.mark.parametrize(("state", "event"), EDGES, ids=[f"{s}-{e}" for s, e in EDGES])
    async def test_the_store_moves_a_job_along_each_edge_of_the_diagram(
        self, store: Store, state: JobState, event: Event
    ) -> None:
        job = await job_in(store, state)
        await take(store, job, event)
        moved = await store.get_job("", job.id)
        assert moved is not None and moved.state is transition(state, event)
        await assert_counts_exact(store)

    @pytest.mark.parametrize(("state", "event"), NON_EDGES, ids=[f"{s}-{e}" for s, e in NON_EDGES])
    async def test_the_store_refuses_or_ignores_each_move_the_diagram_lacks(
        self, store: Store, state: JobState, event: Event
    ) -> None:
        with pytest.raises(IllegalTransition):
            transition(state, event)
        job = await job_in(store, state)
        attempts = await store.list_attempts("", job.id)
        # an operator hears why not; the dispatcher's writes and maintenance match nothing
        refused = event in (Event.CANCEL, Event.OPERATOR_RETRY)
        with pytest.raises(IllegalTransition) if refused else contextlib.nullcontext():
            await take(store, job, event)
        assert await store.get_job("", job.id) == job
        assert await store.list_attempts("", job.id) == attempts
        await assert_counts_exact(store)
