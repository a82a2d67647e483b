"""End to end: what a producer reads of its jobs, on a real ``csjd serve`` and a real sink."""

from __future__ import annotations

import pytest

from app.testing import Sink
from tests.e2e.gateway import GatewayProcess

pytestmark = pytest.mark.slow


def test_a_succeeded_job_retried_is_delivered_again_its_attempts_counting_on(
    gateway: GatewayProcess, sink: Sink
) -> None:
    gateway.put_target("billing", url=sink.url("/hook"))
    job = gateway.post_job("order-1", "billing", {"amount": 42}).json()
    gateway.wait_job(job["id"], ("succeeded",))

    retried = gateway.client.post(f"/jobs/{job['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert (retried.json()["state"], retried.json()["attempts"]) in {
        ("queued", 0),
        ("running", 0),
    }
    done = gateway.wait_job(job["id"], ("succeeded",))
    assert done["attempts"] == 1 and done["completed_at"] is not None

    got = sink.received("/hook")
    assert [r.headers["csjd-attempt"] for r in got] == ["1", "2"]
    assert {r.headers["webhook-id"] for r in got} == {job["id"]}
    assert got[0].body == got[1].body == b'{"amount":42}'
    attempts = gateway.client.get(f"/jobs/{job['id']}/attempts").json()
    assert [(a["n"], a["outcome"]) for a in attempts] == [(1, "success"), (2, "success")]
