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
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.core import errors
from app.core.ids import uuid7
from app.core.job import FailureReason, JobState
from app.core.outcome import Outcome
from app.core.retry import Decision
from app.settings import Settings
from app.storage.base import (
    ATTEMPTS_PAGE,
    AttemptRecord,
    ClaimRequest,
    Completion,
    NewJob,
    TargetSpec,
)
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
        n=n,
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
            lease=claimed.deliveries,
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
            lease=claimed.deliveries,
            decision=again,
            attempt=attempt(claimed.deliveries, Outcome.RETRYABLE, 503),
            now=NOW,
        )
        assert await store.complete(completion)
    return job.id


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

    async def test_unknown_target_is_refused_and_nothing_stored(self, store: Store) -> None:
        with pytest.raises(errors.UnknownTarget):
            await store.enqueue(new_job(target="nope"))
        assert await store.list_jobs("", state=None, target=None, limit=10, before_id=None) == []

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
        assert len(await s.list_jobs("", state=None, target=None, limit=10, before_id=None)) == 2

    async def test_claims_respect_the_limit_and_lease(self, store: Store) -> None:
        for i in range(5):
            await store.enqueue(new_job(f"k{i}"))
        claimed = await store.claim(
            [ClaimRequest(target="billing", limit=3)], NOW + 1, {"billing": 40}
        )
        assert len(claimed) == 3
        assert all(j.state is JobState.RUNNING and j.deliveries == 1 for j in claimed)
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
        assert [j.deliveries for j in claimed] == [2, 1, 1, 1]
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
        assert (claimed.id, claimed.deliveries) == (job_id, 1)

    async def test_a_stale_completion_changes_nothing(self, store: Store) -> None:
        job = (await store.enqueue(new_job())).job
        claimed = (
            await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1})
        )[0]
        done = Decision(state=JobState.SUCCEEDED, attempts=1, next_attempt_at=None)
        stale = Completion(
            job_id=job.id,
            target="billing",
            lease=claimed.deliveries + 1,
            decision=done,
            attempt=attempt(1),
            now=NOW,
        )
        assert not await store.complete(stale)
        assert (await store.get_job("", job.id)).state is JobState.RUNNING  # type: ignore[union-attr]
        fresh = Completion(
            job_id=job.id,
            target="billing",
            lease=claimed.deliveries,
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
            n=1,
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
            lease=claimed.deliveries,
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
            return [a.n for a in found]

        assert await numbers() == [1, 2, 3, 4, 5, 6, 7]
        assert await numbers(limit=3) == [1, 2, 3]
        assert await numbers(after=3, limit=3) == [4, 5, 6]
        assert await numbers(after=6, limit=3) == [7]
        assert await numbers(after=7) == []
        assert await store.list_attempts("someone-else", job_id, after=0, limit=3) is None

    async def test_a_page_of_attempts_is_bounded_by_default(self, store: Store) -> None:
        job_id = await _attempted(store, ATTEMPTS_PAGE + 2)
        first = await store.list_attempts("", job_id)
        assert first is not None and [a.n for a in first] == list(range(1, ATTEMPTS_PAGE + 1))

    async def test_rescue_brings_back_running_jobs_counting_the_attempt(self, store: Store) -> None:
        job = (await store.enqueue(new_job())).job
        await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1})
        assert await store.rescue(NOW + 5, random.Random(1).random) == 1
        rescued = await store.get_job("", job.id)
        assert rescued is not None
        assert (rescued.state, rescued.attempts) == (JobState.RETRYING, 1)
        attempts = await store.list_attempts("", job.id)
        assert attempts is not None and attempts[0].outcome is Outcome.INTERRUPTED

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

        failed = await store.list_jobs(
            None, state=JobState.FAILED, target=None, limit=10, before_id=None
        )
        assert [(j.id, j.caller) for j in failed] == [(bob.id, "bob"), (alice.id, "alice")]
        mine = await store.list_jobs("alice", state=None, target=None, limit=10, before_id=None)
        assert [j.id for j in mine] == [alice.id]
        found = await store.get_job(None, bob.id)
        assert found is not None and found.caller == "bob"
        assert await store.get_job("alice", bob.id) is None

        retried = await store.retry(found.caller, found.id, NOW + 12)
        assert (retried.state, retried.caller) == (JobState.QUEUED, "bob")
        still_failed = await store.list_jobs(
            None, state=JobState.FAILED, target=None, limit=10, before_id=None
        )
        assert [j.id for j in still_failed] == [alice.id]

    async def test_activity_counts_accepted_and_finished_jobs_per_bucket(
        self, store: Store
    ) -> None:
        await store.put_target(TargetSpec(name="search", url="http://x/hook"), NOW)

        def at(t: float, key: str, **kw: object) -> NewJob:
            return new_job(key, id=uuid7(int(t * 1000)), created_at=t, next_attempt_at=t, **kw)

        await store.enqueue(at(NOW - 30, "before-the-window"))
        await store.enqueue(at(NOW + 5, "a"))
        await store.enqueue(at(NOW + 65, "b"))
        await store.enqueue(at(NOW + 70, "c", target="search", expires_at=NOW + 100))
        claimed = await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 30})
        for job in claimed:  # accepted before the window, finished inside it
            await store.complete(
                Completion(
                    job_id=job.id,
                    target="billing",
                    lease=job.deliveries,
                    decision=Decision(state=JobState.SUCCEEDED, attempts=1, next_attempt_at=None),
                    attempt=attempt(1),
                    now=NOW + 130,
                )
            )
        assert await store.fail_expired(NOW + 150) == 1
        await store.enqueue(at(NOW + 200, "after-the-window"))

        counts = {
            (a.target, a.kind, a.bucket): a.count for a in await store.activity(NOW, NOW + 180, 60)
        }
        assert counts == {
            ("billing", "accepted", 0): 1,
            ("billing", "accepted", 1): 1,
            ("search", "accepted", 1): 1,
            ("billing", "succeeded", 2): 1,
            ("search", "failed", 2): 1,
        }

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
                lease=claimed.deliveries,
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
        assert await store.extend_leases({job.id: claimed.deliveries + 1}, NOW + 99) == 0
        assert await store.extend_leases({job.id: claimed.deliveries}, NOW + 60) == 1
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
            lease=claimed[0].deliveries,
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
