"""The dispatcher while the database fails it: results are kept until they land."""

from __future__ import annotations

import time

import pytest

from app.core.job import JobState
from app.core.outcome import Outcome
from app.storage.sql import SqlJobStore
from app.testing import FakeClock
from tests.conftest import LockHolder
from tests.dispatch.conftest import Start
from tests.dispatch.harness import HangingSender, eventually


@pytest.mark.usefixtures("quick_busy")
async def test_an_acknowledged_delivery_is_recorded_after_the_database_comes_back(
    start: Start, sqlite_store: SqlJobStore, sqlite_lock_holder: LockHolder
) -> None:
    """The target acknowledges while another process holds the database's write lock
    for longer than the store's retries: the result is kept and written once the
    lock is gone. The job ends succeeded after one counted attempt, not rescued."""
    sender = HangingSender()
    h = await start(sender=sender, clock=FakeClock(start=time.time()), over=sqlite_store)
    await h.put_target()
    job = await h.enqueue("k")
    await eventually(lambda: sender.inflight == 1)
    sqlite_lock_holder(4.5)  # past the store's retries (3 s): the first writes fail
    sender.release.set()  # the target answers 200 now
    done = await h.wait_for_job(job.id, lambda j: j.state is not JobState.RUNNING, timeout=20)
    assert (done.state, done.attempts) == (JobState.SUCCEEDED, 1)
    assert [a.outcome for a in await h.attempts(job.id)] == [Outcome.SUCCESS]
    assert len(sender.requests) == 1
    assert sqlite_store.committer.transient_errors > 0  # it did meet the lock
