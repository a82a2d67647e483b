"""The SQL store on real SQLite files: constraints, leases, group commit."""

from __future__ import annotations

import asyncio
import base64
import random
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.core import errors
from app.core.attempt import AttemptRecord, Completion
from app.core.ids import uuid7
from app.core.job import FailureReason, JobState, NewJob
from app.core.outcome import Outcome
from app.core.retry import Decision
from app.core.target import TargetSpec
from app.settings import Settings
from app.storage.base import ATTEMPTS_PAGE, ClaimRequest
from app.storage.engine import Conn
from app.storage.factory import build_store
from app.storage.models import targets
from app.storage.sql import SqlJobStore
from app.storage.sqlite import DatabaseInUse, DatabaseLock

NOW = 1_800_000_000.0


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[SqlJobStore]:
    s = build_store(Settings(database_url=backend_url, max_backlog=1000))
    await s.open()
    await s.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
    yield s
    await s.close()


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


async def test_a_new_job_takes_the_targets_limits(store: SqlJobStore) -> None:
    enqueued = await store.enqueue(new_job())
    assert not enqueued.replayed
    job = enqueued.job
    assert (job.state, job.max_attempts, job.expires_at) == (JobState.QUEUED, 10, NOW + 86400)
    stored = await store.get_job("", job.id)
    assert stored == job


async def test_a_future_job_is_scheduled(store: SqlJobStore) -> None:
    job = (await store.enqueue(new_job(next_attempt_at=NOW + 60))).job
    assert job.state is JobState.SCHEDULED


async def test_one_key_makes_one_job_under_concurrency(store: SqlJobStore) -> None:
    results = await asyncio.gather(*(store.enqueue(new_job("same")) for _ in range(50)))
    assert len({r.job.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert store.active == 1


async def test_a_key_reused_for_another_request_is_refused(store: SqlJobStore) -> None:
    first = (await store.enqueue(new_job("k", fingerprint="a"))).job
    with pytest.raises(errors.IdempotencyKeyReused) as info:
        await store.enqueue(new_job("k", fingerprint="b"))
    assert info.value.extensions["job_id"] == first.id


async def test_keys_are_scoped_per_caller(store: SqlJobStore) -> None:
    a = await store.enqueue(new_job("k", caller="alice"))
    b = await store.enqueue(new_job("k", caller="bob"))
    assert a.job.id != b.job.id
    assert await store.get_job("bob", a.job.id) is None


async def test_the_database_itself_refuses_a_second_row_for_a_key(store: SqlJobStore) -> None:
    await store.enqueue(new_job("k"))

    async def insert_same_key(conn: Conn) -> None:
        await conn.execute(
            text(
                "INSERT INTO jobs (id, caller, idempotency_key, fingerprint, target, payload,"
                " state, attempts, deliveries, max_attempts, created_at, updated_at,"
                " expires_at) VALUES ('x', '', 'k', 'f', 'billing', :p, 'queued', 0, 0, 1,"
                " 0, 0, 0)"
            ),
            {"p": b"\x00"},
        )

    with pytest.raises(IntegrityError):
        await store.database.write(insert_same_key)


# -- targets -------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"a secret that no log may ever show").decode()
HEADER_VALUE = "Bearer a header value that no log may show"


async def test_putting_a_target_creates_it_then_replaces_it(store: SqlJobStore) -> None:
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


async def test_puts_of_one_new_target_at_once_create_it_once(store: SqlJobStore) -> None:
    results = await asyncio.gather(
        *(store.put_target(TargetSpec(name="search", url=f"http://x/{i}"), NOW) for i in range(4))
    )
    assert [is_new for _, is_new in results] == [True, False, False, False]
    stored = await store.get_target("search")
    assert stored is not None and stored.spec.url == "http://x/3"


async def test_two_stores_putting_one_new_target_at_once_create_it_once(backend_url: str) -> None:
    """Two replicas loading one targets file: the database, not a read, decides who
    created each target, and the other replaces it instead of failing."""
    a = build_store(Settings(database_url=backend_url, max_backlog=1000))
    b = build_store(Settings(database_url=backend_url, max_backlog=1000))
    await a.open()
    await b.open()
    try:
        for i in range(10):
            spec = TargetSpec(name=f"race-{i}", url="http://x/hook", secret=SECRET)
            # the same clock reading on both: creation is not told from created_at
            results = await asyncio.gather(a.put_target(spec, NOW), b.put_target(spec, NOW))
            assert sorted(is_new for _, is_new in results) == [False, True]
    finally:
        await a.close()
        await b.close()


async def test_database_errors_show_no_parameters(store: SqlJobStore) -> None:
    """Parameters hold secrets, header values and payloads: an error's text, and so
    any traceback in a log, must not."""

    async def insert_twice(conn: Conn) -> None:
        await conn.execute(
            insert(targets).values(
                name="billing",
                url="http://x/hook",
                timeout_s=10,
                max_concurrency=1,
                max_attempts=1,
                backoff_initial_s=1,
                backoff_max_s=1,
                max_retry_duration_s=1,
                secret=SECRET,
                headers={"authorization": HEADER_VALUE},
                enabled=True,
                created_at=NOW,
                updated_at=NOW,
            )
        )

    async def read_missing(conn: Conn) -> None:
        await conn.execute(text("SELECT :secret FROM no_such_table"), {"secret": SECRET})

    with pytest.raises(IntegrityError) as written:
        await store.database.write(insert_twice)
    with pytest.raises(DBAPIError) as read:
        await store.database.read(read_missing)
    for caught in (written, read):
        shown = "".join(traceback.format_exception(caught.value))
        assert "INSERT INTO targets" in shown or "no_such_table" in shown
        assert SECRET not in shown and HEADER_VALUE not in shown


async def test_unknown_target_is_refused_and_nothing_stored(store: SqlJobStore) -> None:
    with pytest.raises(errors.UnknownTarget):
        await store.enqueue(new_job(target="nope"))
    assert await store.list_jobs("", state=None, target=None, limit=10, before_id=None) == []


async def test_a_full_backlog_refuses_new_keys_but_replays_stored_ones(backend_url: str) -> None:
    s = build_store(Settings(database_url=backend_url, max_backlog=2))
    await s.open()
    try:
        await s.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
        first = await s.enqueue(new_job("a"))
        await s.enqueue(new_job("b"))
        with pytest.raises(errors.BacklogFull) as info:
            await s.enqueue(new_job("c"))
        assert info.value.retry_after_s
        replay = await s.enqueue(new_job("a"))
        assert replay.replayed and replay.job.id == first.job.id
        assert len(await s.list_jobs("", state=None, target=None, limit=10, before_id=None)) == 2
    finally:
        await s.close()


async def test_many_producers_share_few_transactions(store: SqlJobStore) -> None:
    before = store.committer.batches
    await asyncio.gather(*(store.enqueue(new_job(f"k{i}")) for i in range(300)))
    assert store.committer.batches - before < 30
    assert store.active == 300


async def test_claims_respect_the_limit_and_lease(store: SqlJobStore) -> None:
    for i in range(5):
        await store.enqueue(new_job(f"k{i}"))
    claimed = await store.claim([ClaimRequest(target="billing", limit=3)], NOW + 1, {"billing": 40})
    assert len(claimed) == 3
    assert all(j.state is JobState.RUNNING and j.delivery == 1 for j in claimed)
    assert all(j.lease_expires_at == NOW + 41 for j in claimed)
    again = await store.claim([ClaimRequest(target="billing", limit=10)], NOW + 1, {"billing": 40})
    assert len(again) == 2
    assert {j.id for j in claimed}.isdisjoint({j.id for j in again})


async def test_scheduled_jobs_are_claimed_only_once_due(store: SqlJobStore) -> None:
    await store.enqueue(new_job(next_attempt_at=NOW + 60))
    assert (
        await store.claim([ClaimRequest(target="billing", limit=5)], NOW + 59, {"billing": 1}) == []
    )
    assert await store.next_due() == NOW + 60
    claimed = await store.claim([ClaimRequest(target="billing", limit=5)], NOW + 60, {"billing": 1})
    assert len(claimed) == 1


async def sent_once(store: SqlJobStore, key: str, due: float, *, sent: bool = True) -> str:
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


async def test_a_claim_takes_no_more_retries_than_it_asks_for(store: SqlJobStore) -> None:
    retries = [await sent_once(store, f"r{i}", NOW - 10 + i) for i in range(3)]
    firsts = [
        (await store.enqueue(new_job(f"f{i}", next_attempt_at=NOW + i))).job.id for i in range(3)
    ]
    claim = [ClaimRequest(target="billing", limit=5, retries=1)]
    claimed = await store.claim(claim, NOW + 5, {"billing": 30})
    # the oldest retry, then first attempts in order: over-budget retries do not
    # hold first attempts back
    assert [j.id for j in claimed] == [retries[0], *firsts]
    assert [j.delivery for j in claimed] == [2, 1, 1, 1]
    none = [ClaimRequest(target="billing", limit=5, retries=0)]
    assert await store.claim(none, NOW + 5, {"billing": 30}) == []
    left = await store.claim([ClaimRequest(target="billing", limit=5)], NOW + 5, {"billing": 30})
    assert [j.id for j in left] == retries[1:]


async def test_claims_with_a_retry_bound_keep_due_order(store: SqlJobStore) -> None:
    retries = [await sent_once(store, f"r{i}", NOW - 10 + i) for i in range(3)]
    firsts = [
        (await store.enqueue(new_job(f"f{i}", next_attempt_at=NOW + i))).job.id for i in range(3)
    ]
    claim = [ClaimRequest(target="billing", limit=2, retries=2)]
    assert [j.id for j in await store.claim(claim, NOW + 5, {"billing": 30})] == retries[:2]
    claim = [ClaimRequest(target="billing", limit=2, retries=5)]
    assert [j.id for j in await store.claim(claim, NOW + 5, {"billing": 30})] == [
        retries[2],
        firsts[0],
    ]


async def test_a_job_put_back_unsent_is_still_a_first_attempt(store: SqlJobStore) -> None:
    job_id = await sent_once(store, "k", NOW, sent=False)
    claim = [ClaimRequest(target="billing", limit=1, retries=0)]
    [claimed] = await store.claim(claim, NOW, {"billing": 30})
    assert (claimed.id, claimed.delivery) == (job_id, 1)


async def test_a_stale_completion_changes_nothing(store: SqlJobStore) -> None:
    job = (await store.enqueue(new_job())).job
    claimed = (await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1}))[0]
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
    store: SqlJobStore,
) -> None:
    """Postgres refuses NUL in text: the answer is kept as what text it can be, and the
    other writes of the same group commit (here, a producer's job) still land."""
    job = (await store.enqueue(new_job("a"))).job
    claimed = (await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1}))[0]
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
    written, other = await asyncio.gather(store.complete(completion), store.enqueue(new_job("b")))
    assert written and not other.replayed
    assert await store.get_job("", other.job.id) is not None
    [stored] = await store.list_attempts("", job.id) or []
    assert stored.response_excerpt == "ok\ufffd\ufffdtail"
    assert stored.error == "HTTP 500\ufffd"
    assert (stored.content_type, stored.response_bytes) == (
        "application/octet-stream\ufffd",
        3_000_000_000,
    )


async def _attempted(store: SqlJobStore, times: int) -> str:
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


async def test_attempts_are_listed_a_page_at_a_time_after_a_number(store: SqlJobStore) -> None:
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


async def test_a_page_of_attempts_is_bounded_by_default(store: SqlJobStore) -> None:
    job_id = await _attempted(store, ATTEMPTS_PAGE + 2)
    first = await store.list_attempts("", job_id)
    assert first is not None and [a.delivery for a in first] == list(range(1, ATTEMPTS_PAGE + 1))


async def test_rescue_brings_back_running_jobs_counting_the_attempt(store: SqlJobStore) -> None:
    job = (await store.enqueue(new_job())).job
    await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1})
    assert await store.rescue(NOW + 5, random.Random(1).random) == 1
    rescued = await store.get_job("", job.id)
    assert rescued is not None
    assert (rescued.state, rescued.attempts) == (JobState.RETRYING, 1)
    attempts = await store.list_attempts("", job.id)
    assert attempts is not None and attempts[0].outcome is Outcome.INTERRUPTED


async def test_rescue_fails_a_job_whose_last_attempt_was_lost(store: SqlJobStore) -> None:
    job = (await store.enqueue(new_job(max_attempts=1))).job
    await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1})
    await store.rescue(NOW + 5, random.Random(1).random)
    failed = await store.get_job("", job.id)
    assert failed is not None
    assert (failed.state, failed.failure_reason) == (
        JobState.FAILED,
        FailureReason.ATTEMPTS_EXHAUSTED,
    )


async def test_cancel_then_retry_follow_the_diagram(store: SqlJobStore) -> None:
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
    store: SqlJobStore,
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


async def test_activity_counts_accepted_and_finished_jobs_per_bucket(store: SqlJobStore) -> None:
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
                delivery=job.delivery,
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
    store: SqlJobStore,
) -> None:
    job = (await store.enqueue(new_job())).job
    claimed = (await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 1}))[0]
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


async def test_expired_waiting_jobs_fail(store: SqlJobStore) -> None:
    job = (await store.enqueue(new_job(expires_at=NOW + 10, next_attempt_at=NOW + 60))).job
    assert await store.fail_expired(NOW + 11) == 1
    failed = await store.get_job("", job.id)
    assert failed is not None
    assert (failed.state, failed.failure_reason) == (JobState.FAILED, FailureReason.EXPIRED)


async def test_purge_removes_old_finished_jobs_and_frees_their_keys(store: SqlJobStore) -> None:
    job = (await store.enqueue(new_job("k"))).job
    await store.cancel("", job.id, NOW)
    assert await store.purge(NOW - 1) == 0
    assert await store.purge(NOW + 1) == 1
    assert await store.get_job("", job.id) is None
    again = await store.enqueue(new_job("k", fingerprint="other"))
    assert not again.replayed


async def test_a_target_with_unfinished_jobs_cannot_be_deleted(store: SqlJobStore) -> None:
    job = (await store.enqueue(new_job())).job
    with pytest.raises(errors.Conflict):
        await store.delete_target("billing")
    await store.cancel("", job.id, NOW)
    await store.delete_target("billing")
    assert await store.get_target("billing") is None
    with pytest.raises(errors.NotFound):
        await store.delete_target("billing")


def test_a_second_gateway_on_the_same_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"
    first = DatabaseLock(url)
    first.acquire()
    try:
        with pytest.raises(DatabaseInUse, match="another csjd gateway"):
            DatabaseLock(url).acquire()
    finally:
        first.release()
    again = DatabaseLock(url)
    again.acquire()  # free again once the first one let go
    again.release()


async def test_a_running_job_is_rescued_only_once_its_lease_ran_out(store: SqlJobStore) -> None:
    job = (await store.enqueue(new_job())).job
    await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 30})
    rng = random.Random(1).random
    assert await store.rescue(NOW + 29, rng, expired_only=True) == 0
    assert await store.rescue(NOW + 31, rng, expired_only=True) == 1
    rescued = await store.get_job("", job.id)
    assert rescued is not None and rescued.state is JobState.RETRYING


@pytest.mark.parametrize(("level", "code"), [("FULL", 2), ("NORMAL", 1)])
async def test_connections_use_wal_and_the_configured_synchronous_level(
    db_url: str, level: str, code: int
) -> None:
    from sqlalchemy import text

    s = build_store(Settings(database_url=db_url, sqlite_synchronous=level))  # type: ignore[arg-type]
    await s.open()
    try:

        async def pragmas(conn: Conn) -> list[object]:
            names = ("journal_mode", "synchronous", "busy_timeout")
            return [(await conn.execute(text(f"PRAGMA {n}"))).scalar() for n in names]

        assert await s.database.read(pragmas) == ["wal", code, 2_000]
        assert await s.database.write(pragmas) == ["wal", code, 2_000]
    finally:
        await s.close()


async def test_leases_are_extended_only_under_the_current_token(store: SqlJobStore) -> None:
    job = (await store.enqueue(new_job())).job
    claimed = (await store.claim([ClaimRequest(target="billing", limit=1)], NOW, {"billing": 30}))[
        0
    ]
    assert await store.extend_leases({job.id: claimed.delivery + 1}, NOW + 99) == 0
    assert await store.extend_leases({job.id: claimed.delivery}, NOW + 60) == 1
    extended = await store.get_job("", job.id)
    assert extended is not None and extended.lease_expires_at == NOW + 60
    rng = random.Random(1).random
    assert await store.rescue(NOW + 31, rng, expired_only=True) == 0  # alive: not rescued


async def test_one_holder_leads_a_duty_until_its_lease_lapses(store: SqlJobStore) -> None:
    assert await store.try_lead("maintenance", "a", NOW, 15)
    assert not await store.try_lead("maintenance", "b", NOW + 5, 15)
    assert await store.try_lead("maintenance", "a", NOW + 10, 15)  # renewed to NOW + 25
    assert not await store.try_lead("maintenance", "b", NOW + 24, 15)
    assert await store.try_lead("maintenance", "b", NOW + 26, 15)  # a stopped renewing
    assert not await store.try_lead("maintenance", "a", NOW + 27, 15)


async def test_a_unit_of_work_that_suspends_fails_loudly_and_writes_nothing(
    backend_url: str,
) -> None:
    """On SQLite a unit runs in a worker thread without an event loop: it may await
    only its connection. Anything else is a bug, and must not half-commit."""
    from app.storage.engine import UnitSuspended

    s = build_store(Settings(database_url=backend_url))
    await s.open()
    try:
        await s.put_target(TargetSpec(name="t", url="http://127.0.0.1:9/"), NOW)

        async def suspends(conn: Conn) -> None:
            await conn.execute(text("DELETE FROM targets"))
            await asyncio.sleep(0)

        if s.database.dialect.name == "sqlite":
            with pytest.raises(UnitSuspended):
                await s.database.write(suspends)
        else:  # natively asynchronous: the same unit is simply fine there
            await s.database.write(suspends)
            await s.put_target(TargetSpec(name="t", url="http://127.0.0.1:9/"), NOW)
        assert [t.name for t in await s.list_targets()] == ["t"]
    finally:
        await s.close()


async def test_every_change_of_state_is_announced_after_its_commit(store: SqlJobStore) -> None:
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
