"""The storage contract for schedules, on the memory store, SQLite and Postgres alike.

The same fixtures as ``test_store_contract.py``: each test runs on a fresh
database of each backend, through the store's public methods only.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from app.core import errors
from app.core.job import JobState
from app.core.schedule import Fire, ScheduleSpec, plan
from app.core.target import TargetSpec
from app.storage.base import JobFilter
from app.storage.memory import MemoryJobStore
from tests.storage.test_store_contract import (
    NOW,
    OpenStore,
    Store,
    assert_counts_exact,
    database_url,
    open_store,
    store,
)

__all__ = ["database_url", "open_store", "store"]  # the contract's fixtures, used here

#: a fire time: 2027-01-15T08:00:00Z, and every five minutes about it
DUE = 1_800_000_000.0 - 1_800_000_000.0 % 300


def spec(name: str = "nightly", **kw: object) -> ScheduleSpec:
    values: dict[str, object] = {
        "name": name,
        "cron": "*/5 * * * *",
        "timezone": "Europe/Paris",
        "target": "billing",
        "payload": b'{"report":"daily"}',
        "headers": {"x-kind": "report"},
        "enabled": True,
    }
    values.update(kw)
    return ScheduleSpec(**values)  # type: ignore[arg-type]


async def due_fire(store: Store, name: str = "nightly", now: float = DUE + 1) -> Fire:
    record = await store.get_schedule(name)
    assert record is not None
    target = await store.get_target(record.spec.target)
    fire = plan(record, target, now)
    assert fire is not None
    return fire


class TestSchedulesContract:
    async def test_a_schedule_put_is_read_back_as_put(self, store: Store) -> None:
        record, created = await store.put_schedule(spec(), DUE, NOW)
        assert created
        assert record.spec == spec()
        assert (record.next_run_at, record.last_run_at, record.last_job_id) == (DUE, None, None)
        assert (record.created_at, record.updated_at) == (NOW, NOW)
        assert await store.get_schedule("nightly") == record
        assert await store.list_schedules() == [record]

    async def test_putting_it_again_replaces_its_spec_and_keeps_its_history(
        self, store: Store
    ) -> None:
        await store.put_schedule(spec(), DUE, NOW)
        await store.fire_schedule(await due_fire(store))
        fired = await store.get_schedule("nightly")
        assert fired is not None and fired.last_job_id is not None
        changed = spec(cron="0 * * * *", payload=b"[1]", headers={}, enabled=False)
        record, created = await store.put_schedule(changed, None, NOW + 5)
        assert not created
        assert record.spec == changed
        assert record.next_run_at is None
        assert (record.created_at, record.updated_at) == (NOW, NOW + 5)
        assert (record.last_run_at, record.last_job_id) == (DUE, fired.last_job_id)
        assert await store.get_schedule("nightly") == record

    async def test_schedules_are_listed_by_name(self, store: Store) -> None:
        for name in ("b", "c", "a"):
            await store.put_schedule(spec(name), DUE, NOW)
        assert [s.name for s in await store.list_schedules()] == ["a", "b", "c"]

    async def test_a_deleted_schedule_is_gone_and_deleting_it_again_is_not_found(
        self, store: Store
    ) -> None:
        await store.put_schedule(spec(), DUE, NOW)
        await store.delete_schedule("nightly")
        assert await store.get_schedule("nightly") is None
        assert await store.list_schedules() == []
        with pytest.raises(errors.NotFound):
            await store.delete_schedule("nightly")

    async def test_only_schedules_whose_time_has_come_are_due_soonest_first(
        self, store: Store
    ) -> None:
        await store.put_schedule(spec("later"), DUE + 300, NOW)
        await store.put_schedule(spec("off", enabled=False), None, NOW)
        await store.put_schedule(spec("second"), DUE, NOW)
        await store.put_schedule(spec("first"), DUE - 300, NOW)
        due = await store.due_schedules(DUE, limit=10)
        assert [s.name for s in due] == ["first", "second"]
        assert [s.name for s in await store.due_schedules(DUE, limit=1)] == ["first"]

    async def test_a_fire_stores_its_job_and_moves_the_schedule_on(self, store: Store) -> None:
        await store.put_schedule(spec(), DUE, NOW)
        fire = await due_fire(store)
        fired = await store.fire_schedule(fire)
        assert fired is not None and fired.job is not None and not fired.replayed
        job = await store.get_job("schedule:nightly", fired.job.id)
        assert job is not None
        assert job.idempotency_key == "schedule:nightly:2027-01-15T08:00:00Z"
        assert job.state is JobState.QUEUED
        assert (job.payload, job.headers) == (b'{"report":"daily"}', {"x-kind": "report"})
        record = await store.get_schedule("nightly")
        assert record is not None
        assert (record.next_run_at, record.last_run_at) == (DUE + 300, DUE)
        assert (record.last_job_id, record.last_error) == (job.id, None)
        assert await store.due_schedules(DUE + 1, limit=10) == []
        await assert_counts_exact(store)

    async def test_a_fire_planned_twice_makes_one_job(self, store: Store) -> None:
        await store.put_schedule(spec(), DUE, NOW)
        first, second = await due_fire(store), await due_fire(store, now=DUE + 2)
        assert await store.fire_schedule(first) is not None
        # the second was planned on the schedule before the first moved it on
        assert await store.fire_schedule(second) is None
        jobs = await store.list_jobs(JobFilter(caller="schedule:nightly"), limit=10, before_id=None)
        assert len(jobs) == 1

    async def test_two_stores_firing_at_once_make_one_job(self, open_store: OpenStore) -> None:
        a = await open_store()
        await a.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
        await a.put_schedule(spec(), DUE, NOW)
        # another replica on Postgres, another store on the SQLite file; one memory store
        b = a if isinstance(a, MemoryJobStore) else await open_store()
        first, second = await due_fire(a), await due_fire(b)
        results = await asyncio.gather(a.fire_schedule(first), b.fire_schedule(second))
        made = {r.job.id for r in results if r is not None and r.job is not None}
        assert len(made) == 1
        jobs = await a.list_jobs(JobFilter(caller="schedule:nightly"), limit=10, before_id=None)
        assert [j.id for j in jobs] == list(made)

    async def test_a_fire_on_a_schedule_put_again_since_writes_nothing(self, store: Store) -> None:
        await store.put_schedule(spec(), DUE, NOW)
        fire = await due_fire(store)
        await store.put_schedule(spec(payload=b'"new"'), DUE, NOW + 1)
        assert await store.fire_schedule(fire) is None
        assert await store.count_jobs(JobFilter(caller="schedule:nightly")) == 0

    async def test_a_fire_on_a_deleted_schedule_writes_nothing(self, store: Store) -> None:
        await store.put_schedule(spec(), DUE, NOW)
        fire = await due_fire(store)
        await store.delete_schedule("nightly")
        assert await store.fire_schedule(fire) is None
        assert await store.count_jobs(JobFilter(caller="schedule:nightly")) == 0

    async def test_a_fire_for_a_disabled_target_is_skipped_and_says_why(self, store: Store) -> None:
        await store.put_target(TargetSpec(name="billing", url="http://x/hook", enabled=False), NOW)
        await store.put_schedule(spec(), DUE, NOW)
        fired = await store.fire_schedule(await due_fire(store))
        assert fired is not None and fired.job is None
        record = await store.get_schedule("nightly")
        assert record is not None
        assert (record.next_run_at, record.last_run_at, record.last_job_id) == (
            DUE + 300,
            DUE,
            None,
        )
        assert record.last_error == "skipped: the target 'billing' is disabled"
        assert await store.count_jobs(JobFilter(caller="schedule:nightly")) == 0

    async def test_a_target_deleted_after_the_fire_was_planned_is_a_skip(
        self, store: Store
    ) -> None:
        await store.put_schedule(spec(), DUE, NOW)
        fire = await due_fire(store)
        await store.delete_target("billing")
        fired = await store.fire_schedule(fire)
        assert fired is not None and fired.job is None
        record = await store.get_schedule("nightly")
        assert record is not None and record.next_run_at == DUE + 300
        assert record.last_error == "skipped: no target named 'billing'"

    async def test_a_fire_over_the_backlog_bound_is_skipped(self, open_store: OpenStore) -> None:
        s = await open_store(max_backlog=1)
        await s.put_target(TargetSpec(name="billing", url="http://x/hook"), NOW)
        await s.put_schedule(spec("one"), DUE, NOW)
        await s.put_schedule(spec("two"), DUE, NOW)
        assert (await s.fire_schedule(await due_fire(s, "one"))) is not None
        fired = await s.fire_schedule(await due_fire(s, "two"))
        assert fired is not None and isinstance(fired.refusal, errors.BacklogFull)
        record = await s.get_schedule("two")
        assert record is not None and (record.last_error or "").startswith("skipped: the backlog")

    async def test_a_fire_whose_key_was_stored_finds_that_job(self, store: Store) -> None:
        await store.put_schedule(spec(), DUE, NOW)
        fire = await due_fire(store)
        made = await store.fire_schedule(fire)
        assert made is not None and made.job is not None
        # the schedule moved back by hand (a restored backup): the same fire time again
        record = await store.get_schedule("nightly")
        assert record is not None
        again, _ = await store.put_schedule(record.spec, DUE, NOW + 1)
        replay = replace(
            fire, seen_updated_at=again.updated_at, job=replace(fire.job, id="01-another")
        )
        fired = await store.fire_schedule(replay)
        assert fired is not None and fired.replayed and fired.job is not None
        assert fired.job.id == made.job.id
        assert await store.count_jobs(JobFilter(caller="schedule:nightly")) == 1
