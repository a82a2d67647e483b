"""The leader's firing of schedules, on the memory store with a fake clock."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from app.core.errors import DatabaseUnavailable
from app.core.schedule import ScheduleSpec, first_run
from app.core.target import TargetSpec
from app.dispatch.schedules import Scheduler
from app.metrics import Metrics
from app.storage.base import JobFilter, JobStore
from app.supervisor import Supervisor
from app.testing import FakeClock

#: 2027-01-15T08:00:00Z, a fire time of every schedule below
T0 = 1_800_000_000.0 - 1_800_000_000.0 % 3600
EVERY_5_MIN = "*/5 * * * *"


class Rig:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.clock = FakeClock(T0 - 60)
        self.metrics = Metrics()
        self.leading = True
        self.wakes = 0
        self.supervisor = Supervisor()
        self.scheduler = Scheduler(
            store,
            clock=self.clock,
            metrics=self.metrics,
            wake=self._wake,
            leading=lambda: self.leading,
            supervisor=self.supervisor,
        )

    def _wake(self) -> None:
        self.wakes += 1

    async def put(self, cron: str = EVERY_5_MIN, name: str = "nightly", **kw: object) -> None:
        spec = ScheduleSpec(
            name=name,
            cron=cron,
            target="billing",
            payload=b'{"n":1}',
            **kw,  # type: ignore[arg-type]
        )
        now = self.clock.now()
        await self.store.put_schedule(spec, first_run(spec, now), now)

    async def keys(self, name: str = "nightly") -> list[str]:
        jobs = await self.store.list_jobs(
            JobFilter(caller=f"schedule:{name}"), limit=100, before_id=None
        )
        return sorted(job.idempotency_key for job in jobs)


@pytest.fixture
async def rig(store: JobStore) -> AsyncIterator[Rig]:
    await store.put_target(TargetSpec(name="billing", url="http://x/hook"), 0.0)
    r = Rig(store)
    yield r
    await r.supervisor.stop()


async def test_a_schedule_fires_once_at_its_time_and_not_before(rig: Rig) -> None:
    await rig.put()
    assert await rig.scheduler.tick() == []  # 07:59: not yet
    rig.clock.t = T0 + 0.3
    [fired] = await rig.scheduler.tick()
    assert fired.job is not None and not fired.replayed
    assert await rig.keys() == ["schedule:nightly:2027-01-15T08:00:00Z"]
    rig.clock.t = T0 + 1.3
    assert await rig.scheduler.tick() == []  # the next tick, same fire time: nothing
    record = await rig.store.get_schedule("nightly")
    assert record is not None
    assert (record.last_run_at, record.last_job_id) == (T0, fired.job.id)
    assert record.next_run_at == T0 + 300


async def test_it_fires_again_at_each_later_time(rig: Rig) -> None:
    await rig.put()
    for minutes in (0, 5, 10):
        rig.clock.t = T0 + minutes * 60 + 0.5
        await rig.scheduler.tick()
    assert await rig.keys() == [
        "schedule:nightly:2027-01-15T08:00:00Z",
        "schedule:nightly:2027-01-15T08:05:00Z",
        "schedule:nightly:2027-01-15T08:10:00Z",
    ]


async def test_times_missed_while_nothing_ran_make_one_job_for_the_latest(rig: Rig) -> None:
    await rig.put()
    rig.clock.t = T0 + 3 * 3600 + 125  # three hours on: 36 fire times have passed
    await rig.scheduler.start()  # a gateway starting fires what is due at once
    assert await rig.keys() == ["schedule:nightly:2027-01-15T11:00:00Z"]
    record = await rig.store.get_schedule("nightly")
    assert record is not None and record.next_run_at == T0 + 3 * 3600 + 300


async def test_a_gateway_that_does_not_lead_fires_nothing(rig: Rig) -> None:
    await rig.put()
    rig.leading = False
    rig.clock.t = T0 + 1
    assert await rig.scheduler.tick() == []
    assert await rig.keys() == []


async def test_a_fire_wakes_the_dispatcher_and_counts_the_job_accepted(rig: Rig) -> None:
    await rig.put()
    rig.clock.t = T0 + 1
    await rig.scheduler.tick()
    assert rig.wakes == 1
    assert rig.metrics.target("billing").accepted._value.get() == 1


async def test_a_fire_for_a_disabled_target_is_skipped_logged_and_the_schedule_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await rig.store.put_target(TargetSpec(name="billing", url="http://x/hook", enabled=False), 0)
    await rig.put()
    rig.clock.t = T0 + 1
    with caplog.at_level(logging.WARNING, "csjd.schedules"):
        [fired] = await rig.scheduler.tick()
    assert fired.job is None
    assert await rig.keys() == []
    assert rig.wakes == 0
    [line] = [r for r in caplog.records if r.getMessage() == "schedule_skipped"]
    assert line.__dict__["reason"] == "the target 'billing' is disabled"
    record = await rig.store.get_schedule("nightly")
    assert record is not None and record.next_run_at == T0 + 300
    assert record.last_error == "skipped: the target 'billing' is disabled"
    # switched on again, the schedule's next fire makes its job
    await rig.store.put_target(TargetSpec(name="billing", url="http://x/hook"), 0)
    rig.clock.t = T0 + 301
    await rig.scheduler.tick()
    assert await rig.keys() == ["schedule:nightly:2027-01-15T08:05:00Z"]
    record = await rig.store.get_schedule("nightly")
    assert record is not None and record.last_error is None


async def test_a_schedule_whose_target_was_deleted_is_kept_and_skips(rig: Rig) -> None:
    await rig.put()
    await rig.store.delete_target("billing")
    rig.clock.t = T0 + 1
    [fired] = await rig.scheduler.tick()
    assert fired.job is None
    record = await rig.store.get_schedule("nightly")
    assert (
        record is not None and record.last_error == "skipped: the target 'billing' does not exist"
    )


async def test_a_disabled_schedule_never_fires(rig: Rig) -> None:
    await rig.put(enabled=False)
    rig.clock.t = T0 + 3600
    assert await rig.scheduler.tick() == []
    assert await rig.keys() == []


async def test_one_bad_schedule_does_not_stop_the_others(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await rig.put(name="good")
    await rig.put(name="bad")
    bad = await rig.store.get_schedule("bad")
    assert bad is not None
    # as if stored by a version that read it otherwise
    broken = ScheduleSpec(name="bad", cron="not cron", target="billing", payload=b"1")
    await rig.store.put_schedule(broken, bad.next_run_at, rig.clock.now())
    rig.clock.t = T0 + 1
    with caplog.at_level(logging.ERROR, "csjd.schedules"):
        await rig.scheduler.tick()
    assert await rig.keys("good") == ["schedule:good:2027-01-15T08:00:00Z"]
    assert any(r.getMessage() == "schedule_invalid" for r in caplog.records)


async def test_a_database_out_of_reach_is_logged_once_and_fires_resume_after(
    rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.put()
    rig.clock.t = T0 + 1

    async def unreachable(now: float, *, limit: int) -> list[object]:
        raise DatabaseUnavailable()

    monkeypatch.setattr(rig.store, "due_schedules", unreachable)
    with caplog.at_level(logging.WARNING, "csjd.schedules"):
        for _ in range(3):
            await rig.scheduler.tick_guarded()
    assert [r.getMessage() for r in caplog.records] == ["schedules_deferred"]
    monkeypatch.undo()
    await rig.scheduler.tick_guarded()
    assert await rig.keys() == ["schedule:nightly:2027-01-15T08:00:00Z"]
