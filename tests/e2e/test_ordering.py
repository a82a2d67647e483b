"""Ordering keys end to end: a real gateway, a real sink, retries, and kill -9."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable

import pytest

from app.testing import Received, Reply, Sink
from tests.e2e.gateway import GatewayProcess
from tests.e2e.test_lifecycle import restart

pytestmark = pytest.mark.slow


def sent_in_order(received: list[Received]) -> dict[str, list[int]]:
    """Per ordering key, the ``n`` of each request the sink got, in the order it got them."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for request in sorted(received, key=lambda r: r.at):
        body = json.loads(request.body)
        by_key[body["key"]].append(body["n"])
    return dict(by_key)


def assert_one_at_a_time(sent: dict[str, list[int]], per_key: int) -> None:
    """Each key's jobs went in the order accepted: a job's requests (its retries, a
    resend after a crash) all came before the next job's first."""
    for key, ns in sent.items():
        assert ns == sorted(ns), f"{key} went out of order: {ns}"
        assert sorted(set(ns)) == list(range(per_key)), f"{key} lost jobs: {ns}"


def test_retries_of_a_head_hold_its_key_while_other_keys_go_on(
    gateway: GatewayProcess, sink: Sink
) -> None:
    # every third request fails: heads are retried while their lines wait
    sink.script("/hook", [Reply(status=503), Reply(), Reply()] * 40, then=Reply())
    gateway.put_target("ordered", url=sink.url("/hook"), backoff_initial_s=0.05, backoff_max_s=0.1)
    ids = []
    for n in range(10):
        for key in ("a", "b", "c"):
            response = gateway.post_job(
                f"{key}{n}", "ordered", {"key": key, "n": n}, ordering_key=key
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
    for job_id in ids:
        gateway.wait_job(job_id, ("succeeded",), timeout=60)
    sent = sent_in_order(sink.received("/hook"))
    assert set(sent) == {"a", "b", "c"}
    assert_one_at_a_time(sent, 10)
    assert sum(len(ns) for ns in sent.values()) > 30  # some were retried
    # never two requests of one key in flight at once
    assert max(r.concurrency for r in sink.received("/hook")) <= 3


def test_a_kill_9_keeps_every_key_in_order(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    sink.answer("/slow", Reply(delay_s=0.1))
    first = gateway_factory().start()
    first.put_target("slow", url=sink.url("/slow"), max_concurrency=8)
    ids = [
        first.post_job(f"{key}{n}", "slow", {"key": key, "n": n}, ordering_key=key).json()["id"]
        for n in range(12)
        for key in ("x", "y")
    ]
    sink.wait_for(lambda got: len(got) >= 6)
    first.kill9()
    second = restart(first)
    try:
        for job_id in ids:
            second.wait_job(job_id, ("succeeded",), timeout=60)
        # a job whose request was out at the kill is sent again, and still before the next
        assert_one_at_a_time(sent_in_order(sink.received("/slow")), 12)
    finally:
        second.stop()


def test_cancelling_the_head_lets_the_next_go(gateway: GatewayProcess, sink: Sink) -> None:
    sink.answer("/down", Reply(status=503))
    gateway.put_target("down", url=sink.url("/down"), backoff_initial_s=30, backoff_max_s=30)
    head = gateway.post_job("h", "down", {"key": "k", "n": 0}, ordering_key="k").json()
    nxt = gateway.post_job("n", "down", {"key": "k", "n": 1}, ordering_key="k").json()
    assert gateway.job(nxt["id"])["held_by"] == "ordering"
    sink.wait_for(lambda got: len(got) >= 1)
    sink.answer("/down", Reply())
    assert gateway.client.post(f"/jobs/{head['id']}/cancel").status_code == 200
    assert gateway.wait_job(nxt["id"], ("succeeded",))["ordering_key"] == "k"
    assert sent_in_order(sink.received("/down")) == {"k": [0, 1]}


def test_a_key_that_is_not_one_is_refused_by_a_real_gateway_and_nothing_stored(
    gateway: GatewayProcess, sink: Sink
) -> None:
    gateway.put_target("ordered", url=sink.url("/hook"))
    for bad in ("", "has space", "x" * 201):
        response = gateway.post_job("bad", "ordered", {"n": 0}, ordering_key=bad)
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == "application/problem+json"
        assert "ordering_key" in response.text
    assert gateway.client.get("/jobs").json()["items"] == []
