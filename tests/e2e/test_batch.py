"""End to end: a batch through a real ``csjd serve`` to a real sink, each job delivered once."""

from __future__ import annotations

import json
import time

import pytest

from app.testing import Sink
from tests.e2e.gateway import GatewayProcess

pytestmark = pytest.mark.slow


def test_a_batch_of_100_is_delivered_once_each_and_a_resend_delivers_nothing(
    gateway: GatewayProcess, sink: Sink
) -> None:
    gateway.put_target("billing", url=sink.url("/hook"))
    body = {
        "jobs": [
            {"idempotency_key": f"order-{i}", "target": "billing", "payload": {"order": i}}
            for i in range(100)
        ]
        + [{"idempotency_key": "lost", "target": "nowhere", "payload": {}}]
    }
    response = gateway.client.post("/jobs/batch", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202] * 100 + [422]
    ids = [r["job"]["id"] for r in results[:100]]

    deadline = time.monotonic() + 30
    while gateway.client.get("/jobs/count", params={"state": "succeeded"}).json()["count"] < 100:
        assert time.monotonic() < deadline, "the batch was not delivered in time"
        time.sleep(0.05)

    again = gateway.client.post("/jobs/batch", json=body).json()["results"]
    assert [r["job"]["id"] for r in again[:100]] == ids
    assert all(r["replayed"] for r in again[:100])
    assert gateway.client.get("/jobs/count").json()["count"] == 100
    got = sink.received("/hook")
    assert sorted(r.headers["webhook-id"] for r in got) == sorted(ids)
    assert sorted(json.loads(r.body)["order"] for r in got) == list(range(100))
