"""Completion callbacks, held to one contract on the memory store, SQLite and Postgres:
each ending of a job with a ``callback_target`` stores, with it, one callback job."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.core import errors
from app.core.job import FailureReason, JobRecord, JobState
from app.core.retry import Decision
from app.core.target import TargetSpec
from app.storage.base import ClaimRequest, JobFilter
from tests.storage.test_store_contract import NOW, SUCCEEDED, Store, new_job, result

FAILED = Decision(
    state=JobState.FAILED,
    attempts=1,
    next_attempt_at=None,
    failure_reason=FailureReason.PERMANENT_STATUS,
)


@pytest.fixture
async def calls(store: Store) -> Store:
    await store.put_target(TargetSpec(name="hooks", url="http://x/callbacks"), NOW)
    return store


async def calling(store: Store, key: str = "k", **kw: object) -> JobRecord:
    return (await store.enqueue(new_job(key, callback_target="hooks", **kw))).job


async def run_once(store: Store, job: JobRecord, decision: Decision, at: float = NOW + 1) -> None:
    [claimed] = await store.claim([ClaimRequest(target=job.target, limit=1)], at, {job.target: 30})
    assert claimed.id == job.id
    assert await store.complete(result(claimed, decision, at=at))


async def callbacks(store: Store) -> list[JobRecord]:
    return await store.list_jobs(JobFilter(target="hooks"), limit=100, before_id=None)


def body(job: JobRecord) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(job.payload)
    return parsed


class TestCallbacksContract:
    async def test_a_job_that_succeeds_calls_back_once_with_itself(self, calls: Store) -> None:
        job = await calling(calls, headers={"x-trace": "1"})
        await run_once(calls, job, SUCCEEDED)
        [callback] = await callbacks(calls)
        assert callback.idempotency_key == f"callback:{job.id}:1"
        assert (callback.caller, callback.state, callback.callback_target) == (
            job.caller,
            JobState.QUEUED,
            None,
        )
        sent = body(callback)
        assert sent["type"] == "job.succeeded"
        assert sent["job"]["id"] == job.id
        assert sent["job"]["state"] == "succeeded"
        assert sent["job"]["payload"] == {"n": 1}
        assert sent["job"]["headers"] == {"x-trace": "1"}
        assert sent["job"]["callback_target"] == "hooks"
        ended = await calls.get_job("", job.id)
        assert ended is not None and ended.callback_job_id == callback.id

    async def test_a_callback_goes_on_in_its_jobs_trace(self, calls: Store) -> None:
        parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        job = await calling(calls, headers={"traceparent": parent, "x-other": "1"})
        await run_once(calls, job, SUCCEEDED)
        [callback] = await callbacks(calls)
        assert callback.headers == {"traceparent": parent}

    async def test_a_failed_job_calls_back_job_failed(self, calls: Store) -> None:
        job = await calling(calls)
        await run_once(calls, job, FAILED)
        [callback] = await callbacks(calls)
        assert body(callback)["type"] == "job.failed"
        assert body(callback)["job"]["failure_reason"] == "permanent_status"

    async def test_a_cancelled_job_calls_back_job_cancelled(self, calls: Store) -> None:
        job = await calling(calls)
        await calls.cancel("", job.id, NOW + 1)
        [callback] = await callbacks(calls)
        assert body(callback)["type"] == "job.cancelled"

    async def test_an_expired_job_calls_back_job_failed(self, calls: Store) -> None:
        job = await calling(calls, next_attempt_at=NOW + 500, expires_at=NOW + 100)
        assert await calls.fail_expired(NOW + 100) == 1
        [callback] = await callbacks(calls)
        assert body(callback)["type"] == "job.failed"
        assert body(callback)["job"]["failure_reason"] == "expired"
        ended = await calls.get_job("", job.id)
        assert ended is not None and ended.callback_job_id == callback.id

    async def test_a_retry_that_ends_again_calls_back_again(self, calls: Store) -> None:
        job = await calling(calls)
        await run_once(calls, job, FAILED)
        await calls.retry("", job.id, NOW + 2)
        await run_once(calls, job, SUCCEEDED, at=NOW + 3)
        found = sorted(await callbacks(calls), key=lambda j: j.idempotency_key)
        assert [c.idempotency_key for c in found] == [
            f"callback:{job.id}:1",
            f"callback:{job.id}:2",
        ]
        assert [body(c)["type"] for c in found] == ["job.failed", "job.succeeded"]
        ended = await calls.get_job("", job.id)
        assert ended is not None and ended.callback_job_id == found[1].id

    async def test_a_retryable_attempt_is_no_ending(self, calls: Store) -> None:
        job = await calling(calls)
        later = Decision(state=JobState.RETRYING, attempts=1, next_attempt_at=NOW + 60)
        await run_once(calls, job, later)
        assert await callbacks(calls) == []

    async def test_a_callback_ending_calls_nothing_back(self, calls: Store) -> None:
        job = await calling(calls)
        await run_once(calls, job, SUCCEEDED)
        [callback] = await callbacks(calls)
        await run_once(calls, callback, SUCCEEDED, at=NOW + 2)
        assert len(await callbacks(calls)) == 1

    async def test_an_unknown_callback_target_is_refused_and_nothing_stored(
        self, calls: Store
    ) -> None:
        with pytest.raises(errors.UnknownTarget):
            await calls.enqueue(new_job("k", callback_target="nowhere"))
        assert await calls.list_jobs(JobFilter(), limit=10, before_id=None) == []

    async def test_a_target_jobs_would_call_back_cannot_be_deleted(self, calls: Store) -> None:
        job = await calling(calls)
        with pytest.raises(errors.Conflict, match="callback_target of 1 unfinished"):
            await calls.delete_target("hooks")
        await calls.cancel("", job.id, NOW + 1)  # its callback is now the target's own job
        [callback] = await callbacks(calls)
        await calls.cancel("", callback.id, NOW + 2)
        await calls.delete_target("hooks")
        assert await calls.get_target("hooks") is None
