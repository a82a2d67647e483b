"""Ordering keys, held to one contract on the memory store, SQLite and Postgres.

A target's jobs with one ordering key go one at a time, in the order accepted;
whatever holds the head (its retries, its schedule) holds only its line; the
line moves on however the head finishes (an attempt, a cancel, an expiry) and
a job an operator retries joins its end. Stores opened twice on one database
are two replicas (on SQLite, two processes' stores on one file).
"""

from __future__ import annotations

import asyncio

import pytest

from app.core.hold import HeldBy, hold_of
from app.core.job import FailureReason, JobRecord, JobState
from app.core.retry import Decision
from app.storage.base import ClaimRequest, JobFilter
from app.storage.sql import SqlJobStore
from tests.storage.test_store_contract import (
    NOW,
    SUCCEEDED,
    OpenStore,
    Store,
    assert_counts_exact,
    new_job,
    result,
)

RETRY_LATER = Decision(state=JobState.RETRYING, attempts=1, next_attempt_at=NOW + 60)
FAILED = Decision(
    state=JobState.FAILED,
    attempts=1,
    next_attempt_at=None,
    failure_reason=FailureReason.PERMANENT_STATUS,
)


async def claim(store: Store, at: float = NOW + 1, limit: int = 100) -> list[JobRecord]:
    return await store.claim([ClaimRequest(target="billing", limit=limit)], at, {"billing": 30})


async def keyed(store: Store, idem: str, key: str = "order-1", **kw: object) -> JobRecord:
    return (await store.enqueue(new_job(idem, ordering_key=key, **kw))).job


async def state_of(store: Store, job: JobRecord) -> JobState:
    stored = await store.get_job("", job.id)
    assert stored is not None
    return stored.state


async def drain_in_order(store: Store, at: float = NOW + 1) -> list[str]:
    """Deliver everything claimable, one round at a time, every attempt succeeding;
    the idempotency keys in the order they were sent."""
    sent: list[str] = []
    while claimed := await claim(store, at):
        for job in claimed:
            sent.append(job.idempotency_key)
            assert await store.complete(result(job, SUCCEEDED, at=at))
    return sent


class TestOrderingContract:
    async def test_a_line_goes_one_at_a_time_while_other_lines_and_unkeyed_jobs_go_on(
        self, store: Store
    ) -> None:
        a1, a2, a3 = [await keyed(store, f"a{i}") for i in (1, 2, 3)]
        b1 = await keyed(store, "b1", key="order-2")
        free = (await store.enqueue(new_job("free"))).job
        assert (a1.state, a2.state, a3.state) == (
            JobState.QUEUED,
            JobState.SCHEDULED,
            JobState.SCHEDULED,
        )
        assert a2.next_attempt_at is None
        assert hold_of(a2, None, None, NOW).by is HeldBy.ORDERING
        assert hold_of(a1, None, None, NOW).by is None

        first = {job.id for job in await claim(store)}
        assert first == {a1.id, b1.id, free.id}
        assert await claim(store) == []  # a2 waits for a1, whatever room there is

    async def test_each_job_goes_once_the_one_before_it_has_finished(self, store: Store) -> None:
        for i in range(5):
            await keyed(store, f"j{i}")
        assert await drain_in_order(store) == [f"j{i}" for i in range(5)]
        await assert_counts_exact(store)

    async def test_the_heads_retries_hold_only_its_line(self, store: Store) -> None:
        a1, a2 = await keyed(store, "a1"), await keyed(store, "a2")
        b1 = await keyed(store, "b1", key="order-2")
        claimed = {job.id: job for job in await claim(store)}
        assert await store.complete(result(claimed[a1.id], RETRY_LATER))
        assert await store.complete(result(claimed[b1.id], SUCCEEDED))
        b2 = await keyed(store, "b2", key="order-2")
        assert [job.id for job in await claim(store, NOW + 2)] == [b2.id]
        assert await state_of(store, a2) is JobState.SCHEDULED
        # a1 comes due again and is retried first; a2 goes only once a1 succeeds
        [again] = await claim(store, NOW + 61)
        assert again.id == a1.id
        assert await store.complete(result(again, SUCCEEDED, at=NOW + 61))
        assert [job.id for job in await claim(store, NOW + 61)] == [a2.id]

    async def test_a_failed_head_releases_the_next(self, store: Store) -> None:
        a1, a2 = await keyed(store, "a1"), await keyed(store, "a2")
        [head] = await claim(store)
        assert await store.complete(result(head, FAILED, status=400))
        assert [job.id for job in await claim(store)] == [a2.id]
        assert await state_of(store, a1) is JobState.FAILED

    async def test_cancelling_the_head_releases_the_next_and_a_cancelled_job_is_passed_over(
        self, store: Store
    ) -> None:
        a1, a2, a3 = [await keyed(store, f"a{i}") for i in (1, 2, 3)]
        await store.cancel("", a2.id, NOW)  # behind the head: the line does not move
        assert await state_of(store, a3) is JobState.SCHEDULED
        assert await state_of(store, a1) is JobState.QUEUED
        await store.cancel("", a1.id, NOW)
        assert [job.id for job in await claim(store)] == [a3.id]
        await assert_counts_exact(store)

    async def test_an_expired_head_releases_the_next(self, store: Store) -> None:
        await keyed(store, "a1", next_attempt_at=NOW + 500, expires_at=NOW + 100)
        a2 = await keyed(store, "a2")
        assert await claim(store) == []  # a scheduled head holds its line until it is due
        assert await store.fail_expired(NOW + 100) == 1
        assert [job.id for job in await claim(store, NOW + 100)] == [a2.id]
        await assert_counts_exact(store)

    async def test_a_job_released_before_its_own_time_waits_for_it(self, store: Store) -> None:
        await keyed(store, "a1")
        a2 = await keyed(store, "a2", next_attempt_at=NOW + 30)
        [head] = await claim(store)
        assert await store.complete(result(head, SUCCEEDED))
        released = await store.get_job("", a2.id)
        assert released is not None
        assert (released.state, released.next_attempt_at) == (JobState.SCHEDULED, NOW + 30)
        assert await claim(store, NOW + 29) == []
        assert [job.id for job in await claim(store, NOW + 30)] == [a2.id]

    async def test_a_retried_job_joins_the_end_of_its_line(self, store: Store) -> None:
        a1, a2 = await keyed(store, "a1"), await keyed(store, "a2")
        [head] = await claim(store)
        assert await store.complete(result(head, FAILED, status=400))
        [second] = await claim(store)
        assert second.id == a2.id
        again = await store.retry("", a1.id, NOW + 2)  # a2 runs: a1 waits behind it
        assert (again.state, again.next_attempt_at) == (JobState.SCHEDULED, None)
        assert await store.complete(result(second, SUCCEEDED, at=NOW + 3))
        [third] = await claim(store, NOW + 3)
        assert third.id == a1.id
        assert await store.complete(result(third, SUCCEEDED, at=NOW + 4))
        # alone in its line, a retried job leads at once
        assert (await store.retry("", a2.id, NOW + 5)).state is JobState.QUEUED
        await assert_counts_exact(store)

    async def test_a_batch_joins_in_its_own_order_and_a_replay_joins_nothing(
        self, store: Store
    ) -> None:
        answers = await store.enqueue_many(
            [new_job(f"b{i}", ordering_key="order-1") for i in range(4)]
        )
        assert [a.job.state for a in answers] == [JobState.QUEUED] + [JobState.SCHEDULED] * 3  # type: ignore[union-attr]
        replay = await store.enqueue(new_job("b2", ordering_key="order-1"))
        assert replay.replayed
        assert await drain_in_order(store) == ["b0", "b1", "b2", "b3"]
        listed = await store.list_jobs(JobFilter(ordering_key="order-1"), limit=10, before_id=None)
        assert sorted(job.idempotency_key for job in listed) == ["b0", "b1", "b2", "b3"]

    async def test_two_replicas_accepting_one_key_at_once_keep_one_line(
        self, open_store: OpenStore
    ) -> None:
        from app.core.target import TargetSpec

        one = await open_store()
        await one.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
        if isinstance(one, SqlJobStore):
            two: Store = await open_store()
        else:
            two = one  # one process's memory: the same line
        jobs = [
            new_job(f"r{i}", ordering_key="shared", created_at=NOW + i / 100) for i in range(40)
        ]
        await asyncio.gather(*((one if i % 2 else two).enqueue(job) for i, job in enumerate(jobs)))
        sent = 0
        for _ in range(200):
            claimed = [
                *await one.claim(
                    [ClaimRequest(target="billing", limit=10)], NOW + 1, {"billing": 30}
                ),
                *await two.claim(
                    [ClaimRequest(target="billing", limit=10)], NOW + 1, {"billing": 30}
                ),
            ]
            assert len(claimed) <= 1, "two jobs of one line were out at once"
            for job in claimed:
                sent += 1
                assert await (one if sent % 2 else two).complete(result(job, SUCCEEDED))
            if sent == 40:
                break
        assert sent == 40
        await assert_counts_exact(one)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_maintenance_moves_on_a_line_whose_head_finished_unnoticed(store: Store) -> None:
    """Should a write ever finish a head without moving its line on, the leader's
    check does (and only then)."""
    assert isinstance(store, SqlJobStore)
    a1, a2 = await keyed(store, "a1"), await keyed(store, "a2")
    assert await store.repair_lines(NOW) == 0

    async def finish_behind_the_stores_back(conn: object) -> None:
        await conn.exec_driver_sql(  # type: ignore[attr-defined]
            f"UPDATE jobs SET state = 'succeeded', completed_at = {NOW} WHERE id = '{a1.id}'"
        )

    await store.database.write(finish_behind_the_stores_back)
    assert await claim(store) == []
    assert await store.repair_lines(NOW + 1) == 1
    assert [job.id for job in await claim(store)] == [a2.id]
