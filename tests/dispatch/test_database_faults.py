"""The dispatcher while the database fails it: results are kept until they land."""

from __future__ import annotations

import time

import pytest

from app.testing import FakeClock
from tests.conftest import ApiFactory, LockHolder
from tests.dispatch.test_dispatcher import HangingSender, eventually


@pytest.mark.usefixtures("quick_busy")
async def test_an_acknowledged_delivery_is_recorded_after_the_database_comes_back(
    api_factory: ApiFactory, sqlite_lock_holder: LockHolder
) -> None:
    """The target acknowledges while another process holds the database's write lock
    for longer than the store's retries: the result is kept and written once the
    lock is gone. The job ends succeeded after one counted attempt, not rescued."""
    sender = HangingSender()
    api = await api_factory(sender=sender, clock=FakeClock(start=time.time()))
    await api.put_target()
    job = (await api.post_job("k")).json()
    await eventually(lambda: sender.inflight == 1)
    sqlite_lock_holder(4.5)  # past the store's retries (3 s): the first writes fail
    sender.release.set()  # the target answers 200 now
    done = await api.wait_for_job(job["id"], lambda j: j["state"] != "running", timeout=20)
    assert (done["state"], done["attempts"]) == ("succeeded", 1)
    attempts = (await api.client.get(f"/jobs/{job['id']}/attempts")).json()
    assert [a["outcome"] for a in attempts] == ["success"]
    assert len(sender.requests) == 1
    assert api.gateway.store.committer.transient_errors > 0  # it did meet the lock
