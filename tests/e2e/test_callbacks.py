"""Completion callbacks end to end: a real gateway, a real sink, and kill -9."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from app.testing import Received, Reply, Sink
from tests.e2e.gateway import GatewayProcess
from tests.e2e.test_lifecycle import restart

pytestmark = pytest.mark.slow


def endings(received: list[Received]) -> dict[str, str]:
    """Per job called back, the ending its callback reported (each callback job once:
    a resend after a crash carries the same webhook-id)."""
    out: dict[str, str] = {}
    for request in received:
        body = json.loads(request.body)
        out[body["job"]["id"]] = body["type"]
    return out


def callback_jobs(gateway: GatewayProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"target": "hooks", "limit": 500}
    while True:
        page = gateway.client.get("/jobs", params=params).json()
        found += page["items"]
        if not page["next_cursor"]:
            return found
        params["cursor"] = page["next_cursor"]


def test_each_ending_is_called_back_to_a_real_sink(gateway: GatewayProcess, sink: Sink) -> None:
    sink.answer("/ok", Reply())
    sink.answer("/bad", Reply(status=422))
    sink.answer("/down", Reply(status=503))
    gateway.put_target("ok", url=sink.url("/ok"))
    gateway.put_target("bad", url=sink.url("/bad"))
    gateway.put_target("down", url=sink.url("/down"), backoff_initial_s=60, backoff_max_s=60)
    gateway.put_target("hooks", url=sink.url("/hooks"))
    ids = {
        name: gateway.post_job(name, name, {"n": name}, callback_target="hooks").json()["id"]
        for name in ("ok", "bad", "down")
    }
    sink.wait_for(lambda got: any(r.path == "/down" for r in got))
    assert gateway.client.post(f"/jobs/{ids['down']}/cancel").status_code == 200
    got = sink.wait_for(lambda got: len([r for r in got if r.path == "/hooks"]) == 3)
    called = endings([r for r in got if r.path == "/hooks"])
    assert called == {
        ids["ok"]: "job.succeeded",
        ids["bad"]: "job.failed",
        ids["down"]: "job.cancelled",
    }
    for name, job_id in ids.items():
        job = gateway.job(job_id)
        callback = gateway.wait_job(job["callback_job_id"], ("succeeded",))
        assert callback["idempotency_key"] == f"callback:{job_id}:1", name
    # the callback carries the job as GET /jobs/{id} shows it
    calls = [json.loads(r.body) for r in got if r.path == "/hooks"]
    [ok] = [call for call in calls if call["job"]["id"] == ids["ok"]]
    assert ok["job"] == gateway.job(ids["ok"])


def test_a_kill_9_neither_loses_nor_doubles_a_callback(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    sink.answer("/slow", Reply(delay_s=0.05))
    first = gateway_factory().start()
    first.put_target("slow", url=sink.url("/slow"), max_concurrency=50)
    first.put_target("hooks", url=sink.url("/hooks"), max_concurrency=50)
    ids = [
        first.post_job(f"k{i}", "slow", {"i": i}, callback_target="hooks").json()["id"]
        for i in range(200)
    ]
    sink.wait_for(lambda got: len(got) >= 60)
    first.kill9()
    second = restart(first)
    try:
        sink.wait_for(lambda got: len(endings([r for r in got if r.path == "/hooks"])) == 200)
        for job_id in ids:
            assert second.wait_job(job_id, ("succeeded",))["callback_job_id"] is not None
        stored = callback_jobs(second)
        keys = Counter(job["idempotency_key"] for job in stored)
        assert keys == Counter({f"callback:{job_id}:1": 1 for job_id in ids})
        assert endings(sink.received("/hooks")) == dict.fromkeys(ids, "job.succeeded")
    finally:
        second.stop()


def test_an_unknown_callback_target_is_refused_by_a_real_gateway_and_nothing_stored(
    gateway: GatewayProcess, sink: Sink
) -> None:
    gateway.put_target("ok", url=sink.url("/ok"))
    response = gateway.post_job("k", "ok", {"n": 1}, callback_target="nowhere")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/unknown-target")
    assert gateway.client.get("/jobs").json()["items"] == []
    assert sink.received() == []
