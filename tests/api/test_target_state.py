"""What /targets and /metrics show of a target's live state: the next probe, deleted series."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from app.api.present import rfc3339
from app.testing import FakeClock, FakeSender, Reply
from tests.conftest import Api, ApiFactory


async def states(api: Api) -> list[dict[str, Any]]:
    """The state of ``billing`` as ``GET /targets/billing`` and ``GET /targets`` show it."""
    one = (await api.client.get("/targets/billing")).json()["state"]
    [listed] = [t["state"] for t in (await api.client.get("/targets")).json()]
    return [one, listed]


async def test_an_open_breaker_shows_when_it_lets_the_next_probe_through(
    api_factory: ApiFactory,
) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.default = Reply(status=500)
    api = await api_factory(sender=sender, clock=clock)
    # one attempt each: no retry is left to probe, so the breaker stays as time leaves it
    await api.put_target(max_attempts=1)
    for i in range(5):
        job = (await api.post_job(f"k{i}")).json()
        await api.wait_for_job(job["id"], lambda j: j["state"] == "failed")
    opened_at = clock.now()
    for state in await states(api):
        assert state["breaker"] == "open"
        assert state["breaker_reopens_at"] == rfc3339(opened_at + 30)

    clock.advance(29.9)
    assert [s["breaker_reopens_at"] for s in await states(api)] == [rfc3339(opened_at + 30)] * 2
    clock.advance(0.1)
    for state in await states(api):
        assert (state["breaker"], state["breaker_reopens_at"]) == ("half_open", None)


async def test_a_deleted_targets_series_leave_the_metrics(api: Api) -> None:
    await api.put_target()
    await api.put_target("other")
    job = (await api.post_job()).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    other = (await api.post_job("k2", {"target": "other", "payload": 1})).json()
    await api.wait_for_job(other["id"], lambda j: j["state"] == "succeeded")
    before = (await api.client.get("/metrics")).text
    assert 'target="billing"' in before

    assert (await api.client.delete("/targets/billing")).status_code == 204
    # gone at once, unless a reload of the targets begun before the delete was
    # under way: it shows them again until the next, a moment later
    deadline = time.monotonic() + 5
    while 'target="billing"' in (after := (await api.client.get("/metrics")).text):
        assert time.monotonic() < deadline, "the deleted target's series stayed"
        await asyncio.sleep(0.01)
    assert 'csjd_deliveries_total{outcome="success",target="other"} 1.0' in after

    # made again, the target counts from nothing
    await api.put_target()
    await api.post_job("k3")
    again = (await api.client.get("/metrics")).text
    assert re.search(r'csjd_jobs_accepted_total\{target="billing"\} 1\.0', again)
